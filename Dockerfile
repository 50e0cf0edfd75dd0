# lumenserve, CPU image: ONNX Runtime (CPU build) + a CPU-only PyTorch.
#
#   docker build -t lumenserve:0.1.0 .
#   docker run --rm --read-only -p 8080:8080 -p 8081:8081 \
#     -v "$PWD/model_repository:/models:ro" lumenserve:0.1.0
#
# The image runs as an unprivileged user and writes only to /tmp and $LUMENSERVE_HOME
# (both declared as volumes, emptyDir mounts on Kubernetes), so a read-only root
# filesystem works. The model repository is mounted at /models (see docs/deployment.md).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtual environment in /opt/lumenserve/venv --------------------------------
# Only what serving imports: the `serve` and `cpu` extras, at the versions
# constraints/serve-cpu.txt pins (no training stack, TorchServe or demo assets).
FROM ${PYTHON_IMAGE} AS build
# PyTorch's CPU-only wheels keep several GB of CUDA libraries out of the image. Only torch and
# torchvision come from that index (--no-deps); their dependencies come from the default
# index with the next install, at the constraints file's versions. Set TORCH_INDEX_URL to ""
# to take torch from the default index instead.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/lumenserve/venv
ENV PATH=/opt/lumenserve/venv/bin:$PATH
WORKDIR /src
COPY constraints ./constraints
RUN pip install --upgrade "pip>=24" \
 && pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL" --no-deps} -c constraints/serve-cpu.txt "torch==2.14.1" "torchvision==0.29.1"
COPY pyproject.toml README.md ./
COPY lumenserve ./lumenserve
COPY training ./training
COPY serving ./serving
COPY explain ./explain
COPY bench ./bench
# The CPU extra is onnxruntime; never onnxruntime-gpu in the same environment (they share
# one import name and the last one installed wins).
RUN pip install -c constraints/serve-cpu.txt ".[serve,cpu]" \
 && python -m compileall -q /opt/lumenserve/venv \
 && python -c "import lumenserve, onnxruntime, grpc, torch; assert 'CUDAExecutionProvider' not in onnxruntime.get_available_providers()"

# ---- runtime --------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="lumenserve" \
      org.opencontainers.image.description="Serve and explain PyTorch models over the Open Inference Protocol v2 (CPU build)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 lumenserve \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/lumenserve --no-create-home \
      --shell /usr/sbin/nologin lumenserve \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/lumenserve /models
COPY --from=build /opt/lumenserve /opt/lumenserve
ENV PATH=/opt/lumenserve/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ORT_DISABLE_TELEMETRY=1 \
    HOME=/var/lib/lumenserve \
    LUMENSERVE_HOME=/var/lib/lumenserve \
    TMPDIR=/tmp \
    LUMENSERVE_HTTP_PORT=8080 \
    LUMENSERVE_GRPC_PORT=8081
# Writable places: anonymous volumes under `docker run --read-only`, emptyDirs on Kubernetes.
VOLUME ["/tmp", "/var/lib/lumenserve"]
USER 10001:10001
WORKDIR /var/lib/lumenserve
EXPOSE 8080 8081
# Ready = every model loaded and warmed up (gRPC health reports the same on port 8081).
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('LUMENSERVE_HTTP_PORT', '8080') + '/v2/health/ready', timeout=2)"]
ENTRYPOINT ["lumenserve"]
# The product binds 127.0.0.1 by default; inside the container it must listen on all
# interfaces to be reachable through the published ports, so the flag is explicit here.
# Ports come from LUMENSERVE_HTTP_PORT / LUMENSERVE_GRPC_PORT (the healthcheck reads the same).
CMD ["serve", "--repository", "/models", "--host", "0.0.0.0"]
