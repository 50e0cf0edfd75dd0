// lumenserve showcase page. Talks only to the public REST API:
//   POST /v2/repository/index, GET /v2/models/{m}, POST .../infer, GET and POST .../explain,
//   GET /v2/models/{m}/versions/{v}/report (the bundle's training report, read-only).
// Images travel raw through the binary tensor extension (BYTES `image`), text as BYTES `text`.
import { loadMethods } from "./methods.js";

const $ = (id) => document.getElementById(id);
const TOP_K = 5;
const SAMPLE_SENTENCES = [
  "A warm, funny and beautifully acted film that stays with you.",
  "Dull, overlong and completely forgettable.",
  "The plot is thin but the performances carry it.",
];
const state = { models: [], model: null, input: null, classes: [], methods: [], common: [], methodsTicket: 0 };

// ---------- HTTP helpers ----------
async function call(path, init = {}) {
  const response = await fetch(path, init);
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!response.ok) {
    const message = (body && body.error) || text || response.statusText;
    const error = new Error(`${response.status}: ${message}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

const enc = (name) => encodeURIComponent(name);
const modelPath = (m) => `/v2/models/${enc(m.name)}/versions/${enc(m.version)}`;

// One raw BYTES element: 4-byte little-endian length, then the bytes.
function bytesElement(bytes) {
  const out = new Uint8Array(4 + bytes.length);
  new DataView(out.buffer).setUint32(0, bytes.length, true);
  out.set(bytes, 4);
  return out;
}

// The v2 request for the current input, as fetch() options (binary extension for images).
function requestFor(input, extra) {
  if (input.kind === "text") {
    const header = { inputs: [{ name: "text", shape: [1], datatype: "BYTES", data: [input.text] }], ...extra };
    return { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(header) };
  }
  const element = bytesElement(input.bytes);
  const header = {
    inputs: [{ name: "image", shape: [1], datatype: "BYTES", parameters: { binary_data_size: element.length } }],
    ...extra,
  };
  const json = new TextEncoder().encode(JSON.stringify(header));
  return {
    method: "POST",
    headers: { "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": String(json.length) },
    body: new Blob([json, element]),
  };
}

function toast(message) {
  const el = $("toast");
  el.textContent = message;
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 7000);
}

async function busy(button, work) {
  button.classList.add("busy");
  button.disabled = true;
  try { return await work(); } catch (error) { toast(error.message); return null; } finally {
    button.classList.remove("busy");
    button.disabled = false;
  }
}

// ---------- models ----------
function taskOf(meta) {
  const names = (meta.inputs || []).map((t) => t.name);
  const declared = meta.parameters && (meta.parameters.task || meta.parameters.task_type);
  if (declared) return String(declared).startsWith("text") ? "text" : "image";
  if (names.includes("text") || names.includes("input_ids")) return "text";
  return "image";
}

// Model names: GET /v2/models (KServe's list of the models serving now; public), else the
// repository index when the server allows it (it needs the repository token), else ?models=a,b in the URL (the demo prints such a URL), else the
// names added on this page before (kept in localStorage).
const STORED = "lumenserve.models";

async function modelNames() {
  const fromQuery = new URLSearchParams(location.search).get("models");
  if (fromQuery) return fromQuery.split(",").map((n) => n.trim()).filter(Boolean);
  try {
    const listed = await call("/v2/models");
    if (listed && listed.models) return listed.models;
  } catch { /* an older server: try the guarded index next */ }
  try {
    const index = await call("/v2/repository/index", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: "{}",
    });
    return [...new Set((index || []).filter((e) => !e.state || e.state === "READY").map((e) => e.name))];
  } catch {
    return JSON.parse(localStorage.getItem(STORED) || "[]");
  }
}

async function describe(name) {
  const meta = await call(`/v2/models/${enc(name)}`);
  return {
    name: meta.name,
    versions: meta.versions || [],
    version: String((meta.versions || ["1"]).map(Number).sort((a, b) => b - a)[0]),
    platform: meta.platform || "",
    task: taskOf(meta),
    meta,
  };
}

async function loadModels() {
  const names = await modelNames();
  const found = await Promise.all(names.map((name) => describe(name).catch(() => null)));
  state.models = found.filter(Boolean);
  localStorage.setItem(STORED, JSON.stringify(state.models.map((m) => m.name)));
  renderModelList();
  $("model-hint").textContent = state.models.length ? "" : "No models listed yet: add one by name, or open the URL `lumenserve demo` prints.";
  const wanted = new URLSearchParams(location.hash.slice(1)).get("model");
  const first = state.models.find((m) => m.name === wanted) || state.models[0];
  if (first) selectModel(first.name);
}

async function addModel(name) {
  if (state.models.some((m) => m.name === name)) { selectModel(name); return; }
  try {
    state.models.push(await describe(name));
  } catch (error) {
    toast(`${name}: ${error.message}`);
    return;
  }
  localStorage.setItem(STORED, JSON.stringify(state.models.map((m) => m.name)));
  $("model-hint").textContent = "";
  renderModelList();
  selectModel(name);
}

function renderModelList() {
  const list = $("model-list");
  list.replaceChildren(...state.models.map((m) => {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.model = m.name;
    button.innerHTML = `<span class="name"></span><span class="task ${m.task}"></span>`;
    button.querySelector(".name").textContent = m.name;
    button.querySelector(".task").textContent = `${m.task} · v${m.version}`;
    button.addEventListener("click", () => selectModel(m.name));
    li.append(button);
    return li;
  }));
}

function selectModel(name) {
  const model = state.models.find((m) => m.name === name);
  if (!model || model === state.model) return; // the selected model again: keep its input and form
  state.model = model;
  history.replaceState(null, "", `#model=${enc(name)}`);
  for (const b of document.querySelectorAll(".model-list button")) b.setAttribute("aria-current", String(b.dataset.model === name));
  $("welcome").hidden = true;
  $("workbench").hidden = false;
  $("model-title").textContent = model.name;
  const inputs = (model.meta.inputs || []).map((t) => `${t.name} ${t.datatype}[${t.shape.join(",")}]`).join(", ");
  $("model-meta").textContent = `${model.task} · version ${model.version} · ${model.platform} · inputs: ${inputs}`;
  $("image-input").hidden = model.task !== "image";
  $("text-input").hidden = model.task !== "text";
  state.input = null;
  $("preview").hidden = true;
  $("drop-text").textContent = "Drop an image here, or choose a file";
  $("explain-latency").textContent = "";
  $("topk").innerHTML = '<li class="empty">No input yet.</li>';
  $("latency").textContent = "";
  $("explain-result").hidden = true;
  $("explain-button").disabled = true;
  $("report-card").hidden = true;
  renderMethods();
  checkReport(model);
}

// ---------- prediction ----------
function parseClassification(entry) {
  // "score:index:label" (the label itself may contain ':')
  const [score, index, ...rest] = String(entry).split(":");
  return { p: Number(score), index: Number(index), label: rest.join(":") || `class ${index}` };
}

async function predict() {
  const model = state.model;
  const extra = { outputs: [{ name: "probabilities", parameters: { classification: TOP_K } }] };
  const started = performance.now();
  const response = await call(`${modelPath(model)}/infer`, requestFor(state.input, extra));
  const elapsed = performance.now() - started;
  if (state.model !== model) return; // the user switched models meanwhile
  const out = response.outputs.find((o) => o.name === "probabilities") || response.outputs[0];
  const top = out.data.flat(Infinity).map(parseClassification);
  state.classes = top;
  renderTopK(top, elapsed);
  $("explain-button").disabled = false;
}

function renderTopK(top, elapsed) {
  $("latency").textContent = `${elapsed.toFixed(1)} ms round trip`;
  const list = $("topk");
  list.replaceChildren(...top.map((t) => {
    const li = document.createElement("li");
    li.innerHTML = '<span class="label"></span><span class="track"><span class="fill"></span></span><span class="p"></span>';
    li.querySelector(".label").textContent = t.label;
    li.querySelector(".label").title = `${t.label} (class ${t.index})`;
    li.querySelector(".fill").style.width = `${Math.max(0.5, t.p * 100).toFixed(1)}%`;
    li.querySelector(".p").textContent = `${(t.p * 100).toFixed(1)} %`;
    return li;
  }));
  const target = $("target");
  target.replaceChildren(new Option("predicted class", ""), ...top.map((t) => new Option(`${t.label} (${t.index})`, String(t.index))));
}

// ---------- inputs ----------
async function useImage(blob, label) {
  const bytes = new Uint8Array(await blob.arrayBuffer());
  const url = URL.createObjectURL(blob);
  state.input = { kind: "image", bytes, url, label };
  const preview = $("preview");
  preview.src = url;
  preview.hidden = false;
  $("drop-text").textContent = `${label} · drop another or click`;
  $("explain-result").hidden = true;
  await busy($("explain-button"), predict);
}

function setupImageInput() {
  const zone = $("dropzone");
  $("file-input").addEventListener("change", (e) => { const f = e.target.files[0]; if (f) useImage(f, f.name); });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const f = e.dataTransfer.files[0];
    if (f) useImage(f, f.name);
  });
}

async function loadSamples() {
  let samples = [];
  try { samples = await call("samples/index.json"); } catch { return; }
  $("samples").replaceChildren(...samples.map((s) => {
    const button = document.createElement("button");
    button.type = "button";
    button.title = `${s.caption}${s.source ? ` (${s.source})` : ""}`;
    const img = document.createElement("img");
    img.src = `samples/${s.file}`;
    img.alt = s.caption;
    button.append(img);
    button.addEventListener("click", async () => useImage(await (await fetch(img.src)).blob(), s.caption));
    return button;
  }));
}

function setupTextInput() {
  $("text-samples").replaceChildren(...SAMPLE_SENTENCES.map((sentence) => {
    const chip = document.createElement("button");
    chip.type = "button";
    chip.textContent = sentence.length > 34 ? `${sentence.slice(0, 32)}…` : sentence;
    chip.title = sentence;
    chip.addEventListener("click", () => { $("text-box").value = sentence; $("text-form").requestSubmit(); });
    return chip;
  }));
  $("text-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("text-box").value.trim();
    if (!text) { toast("Type a sentence first."); return; }
    state.input = { kind: "text", text };
    $("explain-result").hidden = true;
    busy($("text-submit"), predict);
  });
}

// ---------- explanation ----------
async function renderMethods() {
  const model = state.model;
  const ticket = ++state.methodsTicket; // only the latest discovery answer fills the form
  // the server's first discovery call loads its explain library: say so while it does
  $("method").replaceChildren(new Option("loading the explanation methods…", ""));
  const { methods, common, reason } = await loadMethods(modelPath(model));
  if (ticket !== state.methodsTicket) return; // a later call (another model) owns the form
  state.methods = methods;
  state.common = common;
  $("method").replaceChildren(...methods.map((m) => new Option(m.label, m.name)));
  $("compare-methods").replaceChildren(
    Object.assign(document.createElement("legend"), { textContent: "Methods side by side" }),
    ...methods.map((m, i) => {
      const label = document.createElement("label");
      const box = Object.assign(document.createElement("input"), { type: "checkbox", value: m.name, checked: i < 2 });
      box.dataset.method = m.name;
      label.append(box, m.label);
      label.title = m.note;
      return label;
    }),
  );
  $("common-params").replaceChildren(...paramFields(common));
  renderParams();
  if (!methods.length) $("method-note").textContent = reason ? `No explanations: ${reason}` : "";
}

const comparing = () => $("compare-mode").checked;

function renderParams() {
  const method = state.methods.find((m) => m.name === $("method").value);
  const compare = comparing();
  $("compare-methods").hidden = !compare;
  $("method-label").hidden = compare;
  $("method-note").textContent = method && !compare ? method.note : "";
  $("method-params").replaceChildren(...(method && !compare ? paramFields(method.params) : []));
}

function paramFields(params) {
  return params.map((p) => {
    const label = document.createElement("label");
    label.textContent = p.label || p.name;
    const input = document.createElement(p.choices ? "select" : "input");
    if (p.choices) input.append(...p.choices.map((c) => new Option(c, c)));
    else {
      input.type = p.type === "string" ? "text" : "number";
      if (p.type === "float") input.step = "any";
      if (p.min !== undefined) input.min = p.min;
      if (p.max !== undefined) input.max = p.max;
      if (p.placeholder) input.placeholder = p.placeholder;
    }
    input.value = p.value ?? "";
    if (p.description) label.title = p.description;
    input.dataset.param = p.name;
    input.dataset.type = p.type;
    label.append(input);
    return label;
  });
}

function explainParameters() {
  const chosen = [...$("compare-methods").querySelectorAll("input:checked")].map((b) => b.value);
  const parameters = comparing() ? { methods: chosen.join(",") } : { method: $("method").value };
  for (const input of $("explain-form").querySelectorAll(".params [data-param]")) {
    if (input.value === "") continue;
    const type = input.dataset.type;
    parameters[input.dataset.param] = type === "int" ? parseInt(input.value, 10)
      : type === "float" ? Number(input.value) : type === "bool" ? input.value === "true" : input.value;
  }
  if ($("target").value !== "") parameters.targets = JSON.stringify([Number($("target").value)]);
  return parameters;
}

const PNG_PREFIX = "iVBORw0KGgo";
const isPng = (v) => typeof v === "string" && (v.startsWith(PNG_PREFIX) || v.startsWith("data:image/png"));
const SCORE_RE = /faith|deletion|insertion|infidelity|delta|auc|sensitivity|road|comprehensiveness|sufficiency/i;
const SCORE_NOTES = {
  deletion: "target probability as the most-attributed features are removed step by step; lower area = more faithful",
  insertion: "target probability as the most-attributed features are put back; higher area = more faithful",
  road_morf: "ROAD, most relevant imputed first: lower = more faithful",
  road_lerf: "ROAD, least relevant imputed first: higher = more faithful",
  comprehensiveness: "probability drop without the top tokens: higher = more faithful",
  sufficiency: "probability drop keeping only the top tokens: lower = more faithful",
  infidelity: "Captum infidelity: lower is better",
  delta: "IG convergence delta: near 0 means attributions add up to the output change",
};

// Only what the page shows: for images the raw attribution tensor (C x H x W floats) stays on
// the server; text attributions are one float per token, so everything comes back. The scores
// asked for follow the score parameters sent (an output the server did not compute is a 400).
function explainOutputs(parameters) {
  if (state.input.kind === "text") return undefined;
  const scores = [];
  if (parameters.deletion_steps !== 0) scores.push("deletion_auc");
  if (parameters.insertion_steps > 0) scores.push("insertion_auc");
  if (parameters.road_steps > 0) scores.push("road_morf", "road_lerf");
  scores.push("infidelity");
  const perMethod = (m) => ["overlay_png", ...scores, ...(m === "integrated_gradients" ? ["convergence_delta"] : [])];
  const names = parameters.methods
    ? parameters.methods.split(",").flatMap((m) => perMethod(m).map((n) => `${m}/${n}`))
    : perMethod(parameters.method);
  return [...names, "predicted", "target"].map((name) => ({ name }));
}

async function explain() {
  const parameters = explainParameters();
  const started = performance.now();
  const body = { parameters, outputs: explainOutputs(parameters) };
  const model = state.model;
  const response = await call(`${modelPath(model)}/explain`, requestFor(state.input, body));
  if (state.model !== model) return;
  $("explain-latency").textContent = `${(performance.now() - started).toFixed(0)} ms`;
  renderExplanation(response);
}

function figure(src, caption, kind = "") {
  const fig = document.createElement("figure");
  const img = document.createElement("img");
  img.src = src.startsWith("data:") || src.startsWith("blob:") ? src : `data:image/png;base64,${src}`;
  img.alt = caption;
  img.dataset.figure = caption;
  if (kind) img.classList.add(kind);
  // Small renders (a 32 px overlay, a 2-layer attention grid) are shown enlarged, pixel-exact.
  img.addEventListener("load", () => {
    if (img.naturalWidth < 200) {
      img.classList.add("small");
      if (!img.classList.contains("pair")) img.style.width = `${img.naturalWidth * Math.max(2, Math.floor(224 / img.naturalWidth))}px`;
    }
  });
  const cap = document.createElement("figcaption");
  cap.textContent = caption;
  fig.append(img, cap);
  return fig;
}

function prettyName(name) {
  return name.replace(/_png$|_b64$/, "").replace(/_/g, " ");
}

function scoreCards(scores) {
  return scores.map(([key, value]) => {
    const div = document.createElement("div");
    div.className = "score";
    div.dataset.score = key;
    const note = Object.entries(SCORE_NOTES).find(([k]) => key.includes(k));
    div.innerHTML = '<div class="k"></div><div class="v"></div><div class="why"></div>';
    div.querySelector(".k").textContent = prettyName(key);
    const v = Number(value);
    div.querySelector(".v").textContent = v !== 0 && Math.abs(v) < 0.001 ? v.toExponential(2) : v.toFixed(3);
    div.querySelector(".why").textContent = note ? note[1] : "";
    return div;
  });
}

// Compare: the shared prediction once, then one column per method with its pictures and scores
// (its outputs are named "<method>/<output>").
function renderComparison(response) {
  const outputs = response.outputs || [];
  const tokensOut = outputs.find((o) => o.name === "tokens");
  const tokens = tokensOut ? tokensOut.data.flat(Infinity).map(String) : null;
  const columns = response.parameters.methods.split(",").map((method) => {
    const col = document.createElement("div");
    col.className = "compare-col";
    col.dataset.method = method;
    const title = document.createElement("h4");
    title.textContent = method.replaceAll("_", " ");
    col.append(title);
    const scores = [];
    for (const out of outputs.filter((o) => o.name.startsWith(`${method}/`))) {
      const name = out.name.slice(method.length + 1);
      const data = (out.data || []).flat(Infinity);
      const png = out.parameters && out.parameters.content_type === "image/png";
      if (out.datatype === "BYTES" && png) {
        if (name !== "token_png") col.append(figure(data[0], prettyName(name)));
      } else if (name === "attributions" && tokens) {
        const strip = document.createElement("div");
        strip.className = "tokens";
        strip.append(...tokenSpans(tokens, data.map(Number)));
        col.append(strip);
      } else if (SCORE_RE.test(name) && out.datatype !== "BYTES") {
        scores.push([name, data[0]]);
      }
    }
    const box = document.createElement("div");
    box.className = "scores";
    box.append(...scoreCards(scores));
    col.append(box);
    return col;
  });
  $("comparison").replaceChildren(...columns);
  $("comparison").hidden = false;
  for (const id of ["scores", "figures"]) $(id).replaceChildren();
  $("tokens").hidden = true;
  $("token-legend").hidden = !tokens;
  const used = { ...response.parameters };
  try { used.explain_parameters = JSON.parse(used.explain_parameters); } catch { /* shown as sent */ }
  $("explain-used").textContent = JSON.stringify(used, null, 2);
  $("explaining").textContent = `comparing ${response.parameters.methods.replaceAll(",", ", ").replaceAll("_", " ")}`;
  if (response.parameters.explain_cache === "hit") $("explaining").append(" · from the explanation cache");
  $("explain-result").hidden = false;
}

function renderExplanation(response) {
  if (response.parameters && response.parameters.methods) { renderComparison(response); return; }
  $("comparison").hidden = true;
  const outputs = response.outputs || [];
  const params = response.parameters || {};
  const figures = [];
  const scores = [];
  let tokens = null;
  let tokenScores = null;
  for (const out of outputs) {
    const data = (out.data || []).flat(Infinity);
    const png = out.parameters && out.parameters.content_type === "image/png";
    if (out.datatype === "BYTES" && (png || isPng(data[0]))) {
      if (out.name === "token_png" && state.input.kind === "text") continue; // the page draws tokens itself
      const pair = out.name === "overlay_png" && state.input.kind === "image";
      if (pair) figures.push(figure(state.input.url, "input", "pair"));
      figures.push(figure(data[0], prettyName(out.name), pair ? "pair" : ""));
    } else if (out.name === "tokens" && out.datatype === "BYTES") {
      tokens = data.map(String);
    } else if (/token_attribution|^attributions?$/.test(out.name) && out.datatype !== "BYTES") {
      tokenScores = data.map(Number);
    } else if (SCORE_RE.test(out.name) && out.datatype !== "BYTES") {
      scores.push([out.name, data[0]]);
    }
  }
  for (const [key, value] of Object.entries(params)) {
    if (isPng(value)) figures.push(figure(value, prettyName(key), false));
    else if (SCORE_RE.test(key) && typeof value === "number") scores.push([key, value]);
  }
  $("scores").replaceChildren(...scoreCards(scores));
  renderTokens(tokens, tokenScores);
  $("figures").replaceChildren(...figures);
  const used = Object.fromEntries(Object.entries(params).filter(([, v]) => !isPng(v)));
  if (typeof used.explain_parameters === "string") {
    try { used.explain_parameters = JSON.parse(used.explain_parameters); } catch { /* shown as sent */ }
  }
  const target = outputs.find((o) => o.name === "target");
  if (target) {
    const index = Number((target.data || []).flat(Infinity)[0]);
    const known = state.classes.find((c) => c.index === index);
    used.target = known ? `${known.label} (${index})` : index;
  }
  $("explain-used").textContent = JSON.stringify(used, null, 2);
  const methodLabel = $("method").selectedOptions[0] ? $("method").selectedOptions[0].textContent : params.method;
  $("explaining").innerHTML = "<b></b> · explaining <b></b>";
  const [m, t] = $("explaining").querySelectorAll("b");
  m.textContent = methodLabel;
  t.textContent = used.target === undefined ? "the predicted class" : String(used.target);
  if (params.explain_cache === "hit") $("explaining").append(" · from the explanation cache");
  $("explain-result").hidden = false;
  if (!figures.length && !tokens) toast("The explanation came back without a picture.");
}

function renderTokens(tokens, scores) {
  const box = $("tokens");
  $("token-legend").hidden = true;
  if (!tokens || !scores || state.input.kind !== "text") { box.hidden = true; return; }
  box.replaceChildren(...tokenSpans(tokens, scores));
  box.hidden = false;
  $("token-legend").hidden = false;
}

function tokenSpans(tokens, scores) {
  const n = Math.min(tokens.length, scores.length);
  const max = Math.max(1e-9, ...scores.slice(0, n).map(Math.abs));
  const spans = [];
  for (let i = 0; i < n; i += 1) {
    if (!tokens[i] || tokens[i] === "[PAD]" || tokens[i] === "<pad>") continue;
    const span = document.createElement("span");
    const a = scores[i] / max;
    span.textContent = tokens[i];
    span.title = `${tokens[i]}: ${scores[i].toFixed(4)}`;
    span.dataset.attribution = scores[i].toFixed(6);
    span.style.background = a >= 0 ? `rgba(18, 183, 106, ${Math.abs(a) * 0.75})` : `rgba(240, 68, 56, ${Math.abs(a) * 0.75})`;
    spans.push(span);
  }
  return spans;
}

// ---------- training report ----------
async function checkReport(model) {
  const button = $("report-button");
  const url = `${modelPath(model)}/report`;
  button.disabled = true;
  button.title = "";
  try {
    const response = await fetch(url, { method: "GET" });
    if (!response.ok) throw new Error(`${response.status}`);
    button.disabled = false;
    button.onclick = () => {
      $("report-frame").src = response.url;
      $("report-link").href = response.url;
      $("report-card").hidden = false;
      $("report-card").scrollIntoView({ behavior: "smooth" });
    };
  } catch {
    button.title = "This bundle holds no training report.";
  }
}

// ---------- start ----------
async function loadServer() {
  try {
    const meta = await call("/v2");
    $("server-info").textContent = `${meta.name} ${meta.version}`;
    const ready = await fetch("/v2/health/ready");
    $("server-status").dataset.state = ready.ok ? "ready" : "down";
    $("server-status").textContent = ready.ok ? "ready" : "not ready";
  } catch (error) {
    $("server-status").dataset.state = "down";
    $("server-status").textContent = "unreachable";
    $("server-info").textContent = error.message;
  }
}

setupImageInput();
setupTextInput();
$("method").addEventListener("change", renderParams);
$("compare-mode").addEventListener("change", renderParams);
$("add-model").addEventListener("submit", (e) => {
  e.preventDefault();
  const name = $("add-model-name").value.trim();
  if (name) addModel(name).then(() => { $("add-model-name").value = ""; });
});
$("explain-form").addEventListener("submit", (e) => {
  e.preventDefault();
  if (state.input) busy($("explain-button"), explain);
});
loadServer();
loadSamples();
loadModels();
