#!/usr/bin/env bash
# Set up, then open the playground on the shipped CoinRun world (http://127.0.0.1:7860).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export GRADIO_ANALYTICS_ENABLED=False
exec .venv/bin/genie play --world "${WORLD:-worlds/coinrun}" "$@"
