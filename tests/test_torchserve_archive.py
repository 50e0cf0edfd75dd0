"""The TorchServe archive, config writer and request parsing, without starting TorchServe.

The archive is checked by unpacking it the way TorchServe does and running the handler's
service on the extracted folder (real ONNX Runtime), so a .mar that TorchServe could not
serve fails here in seconds.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from lumenserve.bundle import Bundle, load_bundle
from lumenserve.cli import main
from serving.errors import InvalidInput
from serving.torchserve.config import ModelEntry, Ports, TorchServeConfig, parse_properties, read_config
from serving.torchserve.launcher import start_command, torchserve_env
from serving.torchserve.payload import parse_row
from serving.torchserve.service import TorchServeModel

IMAGE = "image-classification"
TEXT = "text-classification"


def _png(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (48, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


# ---- config.properties ---------------------------------------------------------------------
def test_config_binds_loopback_and_merges_models(tmp_path: Path) -> None:
    ports = Ports(inference=18080, management=18081, metrics=18082, grpc_inference=17070, grpc_management=17071)
    config = TorchServeConfig(model_store=tmp_path, ports=ports)
    config = config.with_model(ModelEntry("a", "1", "a.mar", batch_size=8, max_batch_delay_ms=20))
    config = config.with_model(ModelEntry("b", "2", "b.mar"))
    config = config.with_model(ModelEntry("a", "3", "a.mar", batch_size=2))  # replaces a
    config.write()
    props = parse_properties((tmp_path / "config.properties").read_text())
    assert props["inference_address"] == "http://127.0.0.1:18080"
    assert props["management_address"] == "http://127.0.0.1:18081"
    assert props["metrics_address"] == "http://127.0.0.1:18082"
    assert props["grpc_inference_address"] == props["grpc_management_address"] == "127.0.0.1"
    assert (props["grpc_inference_port"], props["grpc_management_port"]) == ("17070", "17071")
    assert props["install_py_dep_per_model"] == "false"
    assert props["default_workers_per_model"] == "1"
    assert props["load_models"] == "a.mar,b.mar"
    models = json.loads(props["models"])
    assert models["a"] == {
        "3": {
            "marName": "a.mar",
            "minWorkers": 1,
            "maxWorkers": 1,
            "batchSize": 2,
            "maxBatchDelay": 5,
            "responseTimeout": 120,
        }
    }
    assert set(models) == {"a", "b"}
    again = read_config(tmp_path)
    assert again.ports == ports
    assert {(m.name, m.version, m.batch_size) for m in again.models} == {("a", "3", 2), ("b", "2", 1)}


def test_start_command_and_environment(tmp_path: Path) -> None:
    config = TorchServeConfig(model_store=tmp_path).with_model(ModelEntry("m", "1", "m.mar"))
    cmd = start_command(config)
    assert cmd[:3] == ["torchserve", "--start", "--ncs"]
    assert "--disable-token-auth" in cmd
    assert cmd[cmd.index("--models") + 1] == "m=m.mar"
    env = torchserve_env(tmp_path / "scratch", base={"PATH": "/bin"})
    assert env["ORT_DISABLE_TELEMETRY"] == "1"
    assert env["TEMP"] == env["TMPDIR"] == str((tmp_path / "scratch").resolve())


# ---- the archive -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def image_store(image_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("store")
    result = CliRunner().invoke(
        main,
        ["archive", str(image_bundle.root), "--out", str(store), "--batch-size", "4", "--max-batch-delay", "25"],
    )
    assert result.exit_code == 0, result.output
    assert "torchserve --start --ncs" in result.output and "--disable-token-auth" in result.output
    return store


def test_archive_holds_handler_and_verified_bundle(image_store: Path, image_bundle: Bundle, tmp_path: Path) -> None:
    mar = image_store / "tiny-image.mar"
    with zipfile.ZipFile(mar) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read("MAR-INF/MANIFEST.json"))
        zf.extractall(tmp_path / "extracted")
    assert manifest["model"]["handler"] == "handler.py"
    assert manifest["model"]["modelVersion"] == "1"
    assert "handler.py" in names and "lumenserve_handler.json" in names
    for artifact in image_bundle.manifest.artifacts:
        assert f"lumenserve_bundle/tiny-image/1/{artifact.path}" in names
    # checksums verified exactly as the worker does
    assert load_bundle(tmp_path / "extracted" / "lumenserve_bundle" / "tiny-image" / "1").name == "tiny-image"
    props = parse_properties((image_store / "config.properties").read_text())
    assert json.loads(props["models"])["tiny-image"]["1"]["batchSize"] == 4
    assert json.loads(props["models"])["tiny-image"]["1"]["maxBatchDelay"] == 25


def test_archive_refuses_a_tampered_bundle(image_bundle: Bundle, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "repo" / "tiny-image" / "1"
    shutil.copytree(image_bundle.root, copy)
    (copy / "labels.json").write_text('["x", "y", "z"]')
    result = CliRunner().invoke(main, ["archive", str(copy), "--out", str(tmp_path / "store")])
    assert result.exit_code != 0
    assert "checksum mismatch" in result.output
    assert not (tmp_path / "store" / "tiny-image.mar").exists()


def test_handler_service_runs_the_extracted_archive(image_store: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(image_store / "tiny-image.mar") as zf:
        zf.extractall(tmp_path)
    service = TorchServeModel.from_model_dir(tmp_path)
    png = _png()
    answers = service.handle(
        [{"body": bytearray(png)}, {"body": bytearray(b"not an image")}, {"data": bytearray(png), "top_k": b"2"}],
        [False, False, False],
    )
    assert [a.status for a in answers] == [200, 400, 200]
    assert "not a decodable" in answers[1].body["error"]
    assert [p["label"] for p in answers[0].body["predictions"]][:2] == [
        p["label"] for p in answers[2].body["predictions"]
    ]
    assert len(answers[2].body["predictions"]) == 2
    assert sum(p["probability"] for p in answers[0].body["predictions"]) == pytest.approx(1.0, abs=1e-5)


# ---- request rows ----------------------------------------------------------------------------
def test_parse_raw_multipart_and_json_rows() -> None:
    png = _png()
    raw = parse_row({"body": bytearray(png)}, task=IMAGE)
    assert raw.kind == "encoded" and raw.value == png and raw.top_k is None
    form = parse_row(
        {"data": bytearray(png), "method": bytearray(b"integrated_gradients"), "n_steps": b"16", "target": b"2"},
        task=IMAGE,
    )
    assert form.method == "integrated_gradients" and form.target == 2 and form.params == {"n_steps": 16}
    body = {"image": base64.b64encode(png).decode(), "top_k": 2, "targets": [1], "parameters": {"n_steps": 4}}
    js = parse_row({"body": body}, task=IMAGE)
    assert js.value == png and js.top_k == 2 and js.target == 1 and js.params == {"n_steps": 4}
    text = parse_row({"body": "a fine film"}, task=TEXT)
    assert (text.kind, text.value) == ("text", "a fine film")
    grpc_style = parse_row({"data": bytearray("ça va".encode())}, task=TEXT)
    assert grpc_style.value == "ça va"
    tensors = parse_row(
        {"inputs": b'[{"name": "input_ids", "shape": [3], "datatype": "INT64", "data": [1,2,3]}]'}, task=TEXT
    )
    assert tensors.kind == "tensors" and tensors.value[0]["data"] == [1, 2, 3]


@pytest.mark.parametrize(
    ("row", "task", "message"),
    [
        ({"body": [1, 2]}, IMAGE, "must be an object"),
        ({"top_k": b"3"}, IMAGE, "no input"),
        ({"body": {"image": "!!notbase64", "text": "x"}}, IMAGE, "one input per request"),
        ({"body": {"image": "!!notbase64"}}, IMAGE, "base64"),
        ({"body": {"text": "hello"}}, IMAGE, "classifies images"),
        ({"body": bytearray(b"\xff\xfe")}, TEXT, "UTF-8"),
        ({"data": b"x", "top_k": b"0"}, TEXT, "top_k"),
        ({"data": b"x", "top_k": b"many"}, TEXT, "integer"),
        ({"data": b"x", "target": b"1", "targets": b"[1]"}, TEXT, "either"),
        ({"inputs": b"{not json"}, TEXT, "not valid JSON"),
        ({"data": b"x", "parameters": b"[1]"}, TEXT, "JSON object"),
    ],
)
def test_parse_refuses_malformed_rows(row: dict[str, object], task: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_row(row, task=task)


def test_text_rows_batch_with_padding(text_bundle: Bundle) -> None:
    service = TorchServeModel(text_bundle)
    short, long = "good", "a much longer sentence that needs many more tokens than the first one"
    together = service.handle([{"body": short}, {"body": long}], [False, False])
    alone = [service.handle([{"body": t}], [False])[0] for t in (short, long)]
    for a, b in zip(together, alone, strict=True):
        assert a.status == b.status == 200
        np.testing.assert_allclose(
            [p["probability"] for p in a.body["predictions"]],
            [p["probability"] for p in b.body["predictions"]],
            atol=1e-5,
        )
    bad = service.handle(
        [{"inputs": [{"name": "input_ids", "shape": [2], "datatype": "INT64", "data": [1, 10**9]}]}], [False]
    )
    assert bad[0].status == 400 and "input_ids" in bad[0].body["error"]


def test_torchscript_runtime_answers_like_onnx(text_bundle: Bundle, tmp_path: Path) -> None:
    from serving.torchserve.archive import build_archive

    mar = build_archive(text_bundle, tmp_path / "store", runtime="torchscript")
    with zipfile.ZipFile(mar) as zf:
        assert json.loads(zf.read("lumenserve_handler.json")) == {"runtime": "torchscript"}
        zf.extractall(tmp_path / "x")
    scripted = TorchServeModel.from_model_dir(tmp_path / "x")
    assert scripted.runtime.kind == "torchscript"
    onnx = TorchServeModel(text_bundle)
    rows = [{"body": "a fine film"}, {"body": "not good at all, really"}]
    for a, b in zip(scripted.handle(rows, [False, False]), onnx.handle(rows, [False, False]), strict=True):
        np.testing.assert_allclose(
            [p["probability"] for p in a.body["predictions"]],
            [p["probability"] for p in b.body["predictions"]],
            atol=1e-5,
        )


def test_explain_rows_keep_their_own_target_and_errors(image_bundle: Bundle) -> None:
    service = TorchServeModel(image_bundle)
    png = bytearray(_png())
    rows = [
        {"data": png, "method": b"saliency", "target": b"2"},
        {"data": png, "method": b"saliency", "target": b"9"},  # out of range: only this row fails
        {"data": png, "method": b"saliency", "target": b"0"},
        {"data": png, "method": b"grad_cam"},
        {"data": png, "method": b"no_such_method"},
    ]
    answers = service.handle(rows, [True] * len(rows))
    assert [a.status for a in answers] == [200, 400, 200, 200, 501]
    assert [answers[0].body["target"], answers[2].body["target"]] == [2, 0]
    assert answers[3].body["method"] == "grad_cam"
    for answer in (answers[0], answers[2], answers[3]):
        image = Image.open(io.BytesIO(base64.b64decode(answer.body["png"])))
        assert image.size == (32, 32)
        assert set(answer.body["faithfulness"]) >= {"deletion_auc"}
