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
    """Write PNGs and the token HTML of item 0 to ``out``; return the outputs by name."""
    out.mkdir(parents=True, exist_ok=True)
    outputs = {o["name"]: o for o in doc.get("outputs", [])}
    for name, entry in outputs.items():
        params = entry.get("parameters") or {}
        if params.get("content_type") == "image/png":
            data = entry["data"][0]
            png = base64.b64decode(data) if params.get("content_encoding") == "base64" else data.encode("latin-1")
            (out / f"{name.removesuffix('_png')}.png").write_bytes(png)
    if "token_html" in outputs:
        page = PAGE.format(
            title=f"{doc.get('model_name', '')}: token attributions", body=outputs["token_html"]["data"][0]
        )
        (out / "tokens.html").write_text(page)
    (out / "response.json").write_text(json.dumps(doc.get("parameters", {}), indent=1))
    return outputs


@click.command("explain")
@click.option("--url", default="http://127.0.0.1:8080", show_default=True, help="The server's HTTP address.")
@click.option("--model", "model", required=True, help="Model name.")
@click.option("--version", "version", default="", help="Model version (default: the latest).")
@click.option("--image", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="An image file.")
@click.option("--text", help="A text to classify and explain.")
@click.option("--method", help="saliency, integrated_gradients, gradient_shap, occlusion, grad_cam, ...")
@click.option("--param", "params", multiple=True, help="A method parameter as k=v (repeatable), e.g. n_steps=64.")
@click.option("--target", type=int, help="Class to explain (default: the predicted class).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder for PNG/HTML.")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the answer.")
def explain_command(
    url: str,
    model: str,
    version: str,
    image: Path | None,
    text: str | None,
    method: str | None,
    params: tuple[str, ...],
    target: int | None,
    out: Path,
    timeout: float,
) -> None:
    """Explain one image or text with a running lumenserve; save the pictures, print the scores."""
    import httpx

    if (image is None) == (text is None):
        raise click.UsageError("give exactly one of --image or --text")
    parameters: dict[str, Any] = dict(_param(p) for p in params)
    if method:
        parameters["method"] = method
    if target is not None:
        parameters["targets"] = json.dumps([target])
    body, headers = build_body(image.read_bytes() if image else None, text, parameters)
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/explain"
    try:
        reply = httpx.post(url.rstrip("/") + path, content=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc}") from None
    if reply.status_code != 200:
        try:
            message = reply.json().get("error", reply.text)
        except ValueError:
            message = reply.text
        click.echo(f"error {reply.status_code}: {message}", err=True)
        sys.exit(1)
    doc = reply.json()
    outputs = save_outputs(doc, out)
    probabilities = outputs["probabilities"]["data"]
    predicted = outputs["predicted"]["data"][0]
    chosen = outputs["target"]["data"][0]
    click.echo(f"model {doc['model_name']} version {doc.get('model_version', '')}")
    click.echo(f"predicted class {predicted} (p={probabilities[predicted]:.4f}); explained class {chosen}")
    click.echo(f"method {doc['parameters']['method']}: {doc['parameters']['explain_parameters']}")
    for score in (*SCORE_NAMES, "convergence_delta"):
        if score in outputs:
            click.echo(f"{score} = {outputs[score]['data'][0]:.4g}")
    click.echo(f"saved to {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
