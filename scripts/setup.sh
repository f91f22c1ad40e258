#!/usr/bin/env bash
# Set up (or refresh) ./.venv for genie. Idempotent: a second run only checks.
#   bash scripts/setup.sh          # library, CLI, playground, recorders
#   bash scripts/setup.sh --test   # + pytest, gradio_client, Playwright and Debian's chromium
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_TEST=0
[[ "${1:-}" == "--test" ]] && WITH_TEST=1
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [[ ! -x .venv/bin/python ]]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

# 1. torch: the CPU build unless a GPU is present, so a CPU machine never pulls multi-GB CUDA wheels.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
  if command -v nvidia-smi >/dev/null 2>&1; then
    echo "[setup] GPU found: installing $TORCH_SPEC (CUDA build)"
    "${PIP[@]}" "$TORCH_SPEC"
  elif curl -fsS --max-time 5 -o /dev/null https://download.pytorch.org/whl/cpu/torch/ 2>/dev/null; then
    echo "[setup] installing $TORCH_SPEC (CPU build from download.pytorch.org)"
    "${PIP[@]}" "$TORCH_SPEC" --index-url https://download.pytorch.org/whl/cpu
  else
    echo "[setup] installing $TORCH_SPEC (local or configured index)"
    "${PIP[@]}" "$TORCH_SPEC"
  fi
fi

# 2. the package itself, with every extra that works on this Python.
EXTRAS=all
[[ $WITH_TEST == 1 ]] && EXTRAS=all,test
STAMP=.venv/.genie-setup-$EXTRAS
if [[ ! -f $STAMP || pyproject.toml -nt $STAMP ]]; then
  echo "[setup] installing genie[$EXTRAS]"
  "${PIP[@]}" -e ".[$EXTRAS]"
  touch "$STAMP"
fi

# 3. browser tests need Debian's chromium (Playwright cannot download browsers offline).
if [[ $WITH_TEST == 1 ]] && [[ ! -x /usr/bin/chromium ]]; then
  if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    echo "[setup] installing Debian chromium for the browser tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "[setup] could not install chromium: browser tests will be skipped"
  else
    echo "[setup] /usr/bin/chromium missing and apt-get unavailable: browser tests will be skipped"
  fi
fi
echo "[setup] ready: $(.venv/bin/python -c 'import torch, genie; print("torch", torch.__version__)')"
