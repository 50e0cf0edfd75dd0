"""``lumenserve explain``: ask a running server to explain an image or a text, save the pictures.

A client of the REST explain route (``POST /v2/models/{m}[/versions/{v}]/explain``): the
image travels as a raw BYTES input with the binary tensor extension, a text as a JSON
string. PNGs come back base64-encoded (see docs/explain.md) and are written to ``--out``.
"""

from __future__ import annotations

import base64
import json
import struct
import sys
from pathlib import Path
from typing import Any

import click

from explain.params import SCORE_NAMES

PAGE = """<!doctype html><meta charset="utf-8"><title>{title}</title>
<body style="font-family:sans-serif;max-width:50em;margin:2em auto">
<h1 style="font-size:1.2em">{title}</h1>{body}</body>
"""


def _param(value: str) -> tuple[str, Any]:
    key, sep, raw = value.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"expected k=v, got {value!r}")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def build_body(image: bytes | None, text: str | None, parameters: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of an explain request for one image (binary extension) or one text (JSON)."""
    if image is not None:
        raw = struct.pack("<I", len(image)) + image  # a BYTES element: 4-byte length, then the bytes
        header = {
            "parameters": parameters,
            "inputs": [
                {"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}
            ],
        }
        head = json.dumps(header).encode()
        return head + raw, {
            "Inference-Header-Content-Length": str(len(head)),
            "Content-Type": "application/octet-stream",
        }
    doc = {"parameters": parameters, "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]}
    return json.dumps(doc).encode(), {"Content-Type": "application/json"}


def save_outputs(doc: dict[str, Any], out: Path) -> dict[str, Any]:
    """Write PNGs and the token HTML of item 0 to ``out`` (a compared method's to ``out/<method>/``);
    return the outputs by name."""
    out.mkdir(parents=True, exist_ok=True)
    outputs = {o["name"]: o for o in doc.get("outputs", [])}
    for name, entry in outputs.items():  # compare: "<method>/<output>" goes to out/<method>/
        params = entry.get("parameters") or {}
        target = out / f"{name.removesuffix('_png')}.png"
        if params.get("content_type") == "image/png":
            data = entry["data"][0]
            png = base64.b64decode(data) if params.get("content_encoding") == "base64" else data.encode("latin-1")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(png)
        if name.rpartition("/")[2] == "token_html":
            title = f"{doc.get('model_name', '')}: token attributions"
            (target.parent / "tokens.html").write_text(PAGE.format(title=title, body=entry["data"][0]))
    (out / "response.json").write_text(json.dumps(doc.get("parameters", {}), indent=1))
    return outputs


@click.command("explain")
@click.option("--url", default="http://127.0.0.1:8080", show_default=True, help="The server's HTTP address.")
@click.option("--model", "model", required=True, help="Model name.")
@click.option("--version", "version", default="", help="Model version (default: the latest).")
@click.option("--list", "list_methods", is_flag=True, help="List the methods the model can run and their parameters.")
@click.option("--image", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="An image file.")
@click.option("--text", help="A text to classify and explain.")
@click.option("--method", help="saliency, integrated_gradients, gradient_shap, occlusion, grad_cam, ...")
@click.option("--methods", help="Several methods to compare, comma-separated (e.g. saliency,grad_cam).")
@click.option("--param", "params", multiple=True, help="A method parameter as k=v (repeatable), e.g. n_steps=64.")
@click.option("--target", type=int, help="Class to explain (default: the predicted class).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Folder for PNG/HTML (to explain).")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the answer.")
def explain_command(
    url: str,
    model: str,
    version: str,
    list_methods: bool,
    image: Path | None,
    text: str | None,
    method: str | None,
    methods: str | None,
    params: tuple[str, ...],
    target: int | None,
    out: Path | None,
    timeout: float,
) -> None:
    """Explain one image or text with a running lumenserve; save the pictures, print the scores.
    With --list: print the methods the model can run and their parameters."""
    import httpx

    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/explain"
    if list_methods:
        click.echo(format_listing(_call(httpx.get, url, path, timeout=timeout)))
        return
    if (image is None) == (text is None):
        raise click.UsageError("give exactly one of --image or --text (or --list)")
    if out is None:
        raise click.UsageError("give --out, the folder for the pictures")
    parameters: dict[str, Any] = dict(_param(p) for p in params)
    if method:
        parameters["method"] = method
    if methods:
        parameters["methods"] = methods
    if target is not None:
        parameters["targets"] = json.dumps([target])
    body, headers = build_body(image.read_bytes() if image else None, text, parameters)
    doc = _call(httpx.post, url, path, content=body, headers=headers, timeout=timeout)
    outputs = save_outputs(doc, out)
    probabilities = outputs["probabilities"]["data"]
    predicted = outputs["predicted"]["data"][0]
    chosen = outputs["target"]["data"][0]
    click.echo(f"model {doc['model_name']} version {doc.get('model_version', '')}")
    click.echo(f"predicted class {predicted} (p={probabilities[predicted]:.4f}); explained class {chosen}")
    used = json.loads(doc["parameters"]["explain_parameters"])
    names = doc["parameters"]["methods"].split(",") if "methods" in doc["parameters"] else [None]
    for name in names:
        prefix = f"{name}/" if name else ""
        click.echo(f"method {name or doc['parameters']['method']}: {json.dumps(used[name] if name else used)}")
        for score in (*SCORE_NAMES, "convergence_delta"):
            if prefix + score in outputs:
                click.echo(f"  {score} = {outputs[prefix + score]['data'][0]:.4g}")
    click.echo(f"saved to {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")


def _call(send: Any, url: str, path: str, **kwargs: Any) -> dict[str, Any]:
    """One HTTP call; a server error prints ``error <status>: <message>`` and exits 1."""
    import httpx

    try:
        reply = send(url.rstrip("/") + path, **kwargs)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc}") from None
    if reply.status_code != 200:
        try:
            message = reply.json().get("error", reply.text)
        except ValueError:
            message = reply.text
        click.echo(f"error {reply.status_code}: {message}", err=True)
        sys.exit(1)
    return reply.json()  # type: ignore[no-any-return]


def format_listing(answer: dict[str, Any]) -> str:
    """The discovery answer as text: per method its description, then one line per parameter."""
    lines = [f"model {answer['name']} version {answer['version']} ({answer['task']})"]
    if not answer["methods"]:
        return "\n".join([*lines, f"no explain methods: {answer.get('reason', '')}"])
    lines.append(f"default method: {answer['default_method']}")
    for method in answer["methods"]:
        gradients = "gradients" if method["gradients"] else "no gradients"
        lines.append(f"\n{method['name']} ({gradients}): {method['description']}")
        for name, schema in method["parameters"]["properties"].items():
            lines.append(f"  {name}: {_describe(schema)}")
        lines.append(f"  scores: {', '.join(method['scores'])}")
    return "\n".join(lines)


def _describe(schema: dict[str, Any]) -> str:
    kind = "|".join(map(str, schema["enum"])) if "enum" in schema else schema.get("type", "any")
    kind = "|".join(kind) if isinstance(kind, list) else kind
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    bounds = f" [{low}, {high}]" if low is not None or high is not None else ""
    return f"{kind}{bounds}, default {json.dumps(schema.get('default'))}: {schema.get('description', '')}"
