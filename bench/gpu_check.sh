#!/usr/bin/env bash
# lumenserve GPU check (issue 4): serve the bundles of a repository on CUDA and compare the
# served throughput (gRPC and HTTP, raw FP32 tensors, closed loop) with in-process inference
# of the same model file on the same GPU. Fits one 8-minute device run.
#
#   1. here, with the registry reachable (once):   bench/gpu_check.sh fetch
#      downloads the Python 3.12 wheels the GPU machine lacks into .whl/ (git-ignored).
#   2. on the GPU machine (device tool, carry [".whl"]):   bench/gpu_check.sh run [REPO]
#      REPO defaults to model_repository/ when it holds bundles, else a MobileNetV2 224 px
#      bundle (random weights) is exported there first.
#   3. training on CUDA:   bench/gpu_check.sh train
#      bf16 autocast (precision auto and bf16), gradient checkpointing, an effective batch
#      size and the CUDA peak-memory figure with the real Trainer on a small torchvision
#      model and random data; LoRA on a tiny BERT when transformers + peft are importable;
#      then NCCL DDP under torchrun on every visible GPU (weights identical on all ranks).
#      Prints one line per case and fails on the first that does not hold. ~2-4 minutes.
#
# Environment: DEVICE (default cuda; cpu works for a dry run), DURATION seconds per point
# (default 8), CONCURRENCY (default "1 16 64"), PYTHON (default python3).
# The GPU image has onnxruntime (CPU build) only and onnxruntime-gpu is too large to carry
# (> 64 MiB), so the runtime is ONNX Runtime when its CUDA provider is importable and
# TorchScript on CUDA otherwise; the in-process ceiling always uses the same runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-run}"
PY="${PYTHON:-python3}"
WHEELS=(
  "grpcio==1.81.2" "grpcio-health-checking==1.81.1" "grpcio-reflection==1.81.1" "protobuf==6.33.6"
  "starlette==1.10.0" "uvicorn==0.54.0" "httptools==0.9.0" "orjson==3.13.0"
  "pydantic==2.14.4" "pydantic-core==2.50.5" "pydantic-settings==2.16.3" "python-dotenv==1.2.4"
  "typing-inspection==0.4.5" "annotated-types==0.8.0"
)

if [[ "$MODE" == "fetch" ]]; then
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  mkdir -p .whl
  for spec in "${WHEELS[@]}"; do
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$spec" \
      || echo "WARNING: no wheel for $spec (pin another version that exists for cp312)"
  done
  du -sh .whl
  exit 0
fi

if [[ "$MODE" == "train" ]]; then
  export PYTHONPATH="$PWD" OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1 ORT_DISABLE_TELEMETRY=1
  command -v nvidia-smi >/dev/null && nvidia-smi -L || echo "(no nvidia-smi)"
  CHECK="$(mktemp -d)/train_check.py"
  cat > "$CHECK" <<'PYEOF'
"""One Trainer run per case on CUDA; under torchrun: the NCCL DDP case."""
import os, sys
import torch, torchvision
from torch.utils.data import TensorDataset
from training.config import TrainConfig
from training.distributed import setup_distributed
from training.models import BuiltModel, enable_gradient_checkpointing
from training.trainer import Trainer

info = setup_distributed()
assert info.device.type == "cuda", f"no CUDA device ({info.device})"
g = torch.Generator().manual_seed(0)
data = TensorDataset(torch.randn(512, 3, 96, 96, generator=g), torch.randint(0, 10, (512,), generator=g))


def run(label, checkpointing=False, **train):
    torch.manual_seed(0)
    model = torchvision.models.get_model("mobilenet_v3_large", weights=None, num_classes=10)
    if checkpointing:
        enable_gradient_checkpointing(BuiltModel(model, []).model)
    cfg = TrainConfig(epochs=1, batch_size=32, lr=1e-3, **train)
    result = Trainer(model, data, cfg, dist_info=info, progress=False).fit()
    if info.is_main:
        print(f"{label:<34} {result.precision:<5} {result.samples_per_second:8.1f} samples/s "
              f"peak {result.peak_memory_mb:7.1f} MiB ({result.peak_memory_source}) "
              f"eff. batch {result.effective_batch_size}")
    assert result.peak_memory_source == "cuda_max_allocated" and result.peak_memory_mb > 0
    return model, result


if info.enabled:
    model, _ = run(f"ddp nccl x{info.world_size}", precision="bf16")
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(info.world_size)]
    torch.distributed.all_gather(gathered, flat)
    assert torch.distributed.get_backend() == "nccl"
    assert all(torch.equal(gathered[0], t) for t in gathered), "ranks disagree"
    sys.exit(0)
_, fp32 = run("fp32", precision="fp32")
_, auto = run("auto (bf16 on CUDA)")
_, bf16 = run("bf16", precision="bf16")
_, ckpt = run("bf16 + gradient checkpointing", checkpointing=True, precision="bf16")
_, accum = run("bf16 + effective batch 128", precision="bf16", effective_batch_size=128)
assert auto.precision == bf16.precision == "bf16" and fp32.precision == "fp32"
assert accum.accumulation_steps == 4
assert ckpt.peak_memory_mb < bf16.peak_memory_mb, "gradient checkpointing did not lower the CUDA peak"
try:
    import peft  # noqa: F401
    from transformers import BertConfig, BertForSequenceClassification
except ImportError:
    print("lora: transformers/peft not importable here, skipped")
else:
    from training.config import LoraSettings
    from training.models import apply_lora
    bert = BertForSequenceClassification(BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2,
                                                    num_attention_heads=2, intermediate_size=128, num_labels=2))
    built = BuiltModel(bert, ["classifier.weight", "classifier.bias"])
    counts = apply_lora(built, LoraSettings(r=4))
    ids = torch.randint(0, 1000, (256, 32), generator=g)
    texts = [{"input_ids": i, "attention_mask": torch.ones_like(i), "labels": torch.tensor(int(i[0]) % 2)} for i in ids]
    collate = lambda rows: {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
    result = Trainer(built.model, texts, TrainConfig(epochs=1, batch_size=32, precision="bf16"), collate_fn=collate,
                     head_params=built.head_params, dist_info=info, progress=False).fit()
    print(f"lora r=4 bf16: {counts['trainable']}/{counts['total']} trainable, "
          f"{result.samples_per_second:.1f} samples/s, peak {result.peak_memory_mb:.1f} MiB")
PYEOF
  "$PY" "$CHECK"
  GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
  "$PY" -m torch.distributed.run --standalone --nproc_per_node "$GPUS" "$CHECK"
  echo "== training check passed"
  exit 0
fi

REPO="${2:-model_repository}"
DEVICE="${DEVICE:-cuda}"
export DURATION="${DURATION:-8}" CONCURRENCY="${CONCURRENCY:-1 16 64}"
export LUMENSERVE_HOME="${LUMENSERVE_HOME:-/tmp/lumenserve-gpu-check}" ORT_DISABLE_TELEMETRY=1
export OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
mkdir -p "$LUMENSERVE_HOME"
if [[ -d .whl ]] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
command -v nvidia-smi >/dev/null && nvidia-smi -L || echo "(no nvidia-smi)"

if ! ls "$REPO"/*/*/manifest.json >/dev/null 2>&1; then
  REPO="$LUMENSERVE_HOME/repo"
  echo "== exporting a MobileNetV2 224 px bundle (random weights) into $REPO"
  "$PY" - "$REPO" <<'PYEOF'
import sys
from pathlib import Path
import torch, torchvision
from lumenserve.bundle import ImagePreprocessing, list_models
from training.export import export_image_model
repo = Path(sys.argv[1]); repo.mkdir(parents=True, exist_ok=True)
if "mobilenet-v2" not in list_models(repo):
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=10)
    pre = ImagePreprocessing(resize_size=256, crop_size=224, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    export_image_model(model, arch_name="mobilenet_v2", labels=[f"class{i}" for i in range(10)],
                       preprocessing=pre, repo=repo, name="mobilenet-v2")
PYEOF
fi

RUNTIME=$("$PY" -c "import onnxruntime as o; print('onnx' if 'CUDAExecutionProvider' in o.get_available_providers() else 'torchscript')" 2>/dev/null || echo torchscript)
[[ "$DEVICE" == cpu ]] && RUNTIME="${RUNTIME_OVERRIDE:-onnx}"
echo "== serving $REPO on $DEVICE with runtime $RUNTIME"
LOG="$LUMENSERVE_HOME/server.log"
"$PY" -m lumenserve serve --repository "$REPO" --device "$DEVICE" --runtime "$RUNTIME" \
  --http-port 0 --grpc-port 0 --max-batch-size 64 > "$LOG" 2>&1 &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 360); do
  grep -q "lumenserve ready" "$LOG" && break
  kill -0 $SERVER 2>/dev/null || { cat "$LOG"; exit 1; }
  sleep 0.5
done
grep "lumenserve ready" "$LOG" || { cat "$LOG"; exit 1; }
HTTP_PORT=$(sed -n 's/.*ready: https\?:\/\/[^:]*:\([0-9]*\).*/\1/p' "$LOG")
GRPC_PORT=$(sed -n 's/.*grpc=[^:]*:\([0-9]*\).*/\1/p' "$LOG")

"$PY" - "$REPO" "$DEVICE" "$RUNTIME" "$HTTP_PORT" "$GRPC_PORT" <<'PYEOF'
import asyncio, os, sys, time
from pathlib import Path
import numpy as np
from lumenserve.bundle import list_models, load_bundle, version_dir

repo, device, runtime, http_port, grpc_port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
duration = float(os.environ["DURATION"])
concurrencies = [int(c) for c in os.environ["CONCURRENCY"].split()]
cuda = device.startswith("cuda")


def in_process(bundle, batch):
    """Images/s of the bare model on the same device, host arrays in and out (as the server)."""
    spec = bundle.manifest.inputs[0]
    x = np.random.default_rng(0).standard_normal((batch, *spec.shape[1:])).astype(np.float32)
    if runtime == "onnx":
        import onnxruntime as ort
        providers = [("CUDAExecutionProvider", {"device_id": device.split(":")[1] if ":" in device else "0"}),
                     "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(bundle.path("onnx")), options, providers=providers)
        run = lambda: session.run(None, {spec.name: x})
    else:
        import torch
        module = torch.jit.load(str(bundle.path("torchscript")), map_location=device if cuda else "cpu").eval()
        def run():
            with torch.inference_mode():
                return module(torch.from_numpy(x).to(device if cuda else "cpu")).cpu().numpy()
    for _ in range(5):
        run()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < duration / 2:
        run(); done += batch
    return done / (time.perf_counter() - start)


def one_image(bundle):
    spec = bundle.manifest.inputs[0]
    return np.random.default_rng(1).standard_normal((1, *spec.shape[1:])).astype(np.float32), spec


async def closed_loop(call, concurrency):
    latencies, stop = [], time.perf_counter() + duration
    async def worker():
        while time.perf_counter() < stop:
            t = time.perf_counter(); await call(); latencies.append(time.perf_counter() - t)
    for _ in range(3):
        await call()
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return len(latencies) / elapsed, float(np.percentile(latencies, 50) * 1000), float(np.percentile(latencies, 99) * 1000)


async def served(model, bundle):
    import grpc, httpx, orjson
    from serving.protogen import inference_pb2 as pb, inference_pb2_grpc as pb_grpc
    x, spec = one_image(bundle)
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name=spec.name, datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(x.tobytes())
    request.outputs.add(name="logits")
    options = [("grpc.max_receive_message_length", 1 << 28), ("grpc.max_send_message_length", 1 << 28)]
    head = orjson.dumps({"inputs": [{"name": spec.name, "datatype": "FP32", "shape": list(x.shape),
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]})
    body, headers = head + x.tobytes(), {"Inference-Header-Content-Length": str(len(head))}
    rows = []
    for c in concurrencies:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}", options=options) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            rows.append(("grpc", c, *await closed_loop(lambda: stub.ModelInfer(request), c)))
        limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", limits=limits, timeout=60) as client:
            async def post():
                r = await client.post(f"/v2/models/{model}/infer", content=body, headers=headers)
                r.raise_for_status()
            rows.append(("http", c, *await closed_loop(post, c)))
    return rows


for model in list_models(repo):
    bundle = load_bundle(version_dir(repo, model))
    if bundle.manifest.task != "image-classification":
        print(f"-- {model}: text model, skipped (this check feeds FP32 image tensors)")
        continue
    ceilings = {b: in_process(bundle, b) for b in (1, 8, 32)}
    best_batch = max(ceilings, key=ceilings.get)
    ceiling = ceilings[best_batch]
    print(f"\n== {model} ({runtime} on {device})")
    print("in-process img/s by batch: " + ", ".join(f"b{b}={v:.0f}" for b, v in ceilings.items()))
    print(f"{'transport':>9} {'conc':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'x ceiling':>9}")
    for transport, c, rate, p50, p99 in asyncio.run(served(model, bundle)):
        print(f"{transport:>9} {c:>5} {rate:>9.1f} {p50:>8.2f} {p99:>8.2f} {rate / ceiling:>9.2f}")
PYEOF
kill -TERM $SERVER; wait $SERVER || true
trap - EXIT
echo "== server log tail"; tail -5 "$LOG"
