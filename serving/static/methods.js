// Explanation methods the page offers, built from what the server answers for the model:
// GET /v2/models/{m}/versions/{v}/explain lists each method the model can run with its
// parameters as JSON Schema (type, minimum/maximum, default, description), its outputs and
// scores. The bounds live in one place, the explain library's parameter models (lowered by
// the server's explain_parameter_max); the server validates every value.

// Of the parameters every method takes (scores, rendering), the ones the page offers, once.
const COMMON_SHOWN = ["deletion_steps", "insertion_steps", "road_steps", "aopc", "colormap", "alpha"];

const words = (name) => name.replaceAll("_", " ");

// One JSON Schema property -> one form field {name, type, value, min, max, choices, label, ...}.
function field(name, schema) {
  const options = schema.anyOf ? schema.anyOf.filter((s) => s.type !== "null") : [schema];
  const nullable = options.length < (schema.anyOf || [schema]).length;
  const s = { ...options[0], ...schema };
  const param = { name, label: words(name), description: s.description || "" };
  if (s.enum) {
    param.choices = s.enum.map(String);
    param.type = "string";
  } else if (s.type === "boolean") {
    param.choices = ["true", "false"];
    param.type = "bool";
  } else {
    param.type = s.type === "integer" ? "int" : s.type === "number" ? "float" : "string";
    const min = s.minimum ?? s.exclusiveMinimum;
    if (min !== undefined) param.min = min;
    const max = s.maximum ?? s.exclusiveMaximum;
    if (max !== undefined) param.max = max;
  }
  param.value = s.default === null || s.default === undefined ? "" : String(s.default);
  if (nullable && param.value === "") param.placeholder = "auto";
  return param;
}

const fields = (schema, only) =>
  Object.entries(schema.properties || {})
    .filter(([name]) => !only || only.includes(name))
    .map(([name, s]) => field(name, s));

// The page's methods for one model: {methods: [{name, label, note, scores, params}] (default
// method first; params: the method's own), common: the shared parameters shown, reason}.
export async function loadMethods(modelPath) {
  const response = await fetch(`${modelPath}/explain`);
  if (!response.ok) return { methods: [], common: [], reason: `discovery answered ${response.status}` };
  const answer = await response.json();
  const names = answer.methods.map((m) => Object.keys(m.parameters.properties || {}));
  const shared = names.length > 1 ? names.reduce((a, b) => a.filter((n) => b.includes(n))) : [];
  const first = answer.methods[0];
  const common = first ? fields(first.parameters, COMMON_SHOWN.filter((n) => shared.includes(n))) : [];
  const methods = answer.methods.map((m) => ({
    name: m.name,
    label: words(m.name),
    note: m.description,
    scores: m.scores || [],
    params: fields(m.parameters).filter((p) => !shared.includes(p.name)),
  }));
  methods.sort((a, b) => (b.name === answer.default_method) - (a.name === answer.default_method));
  return { methods, common, reason: answer.reason || "" };
}
