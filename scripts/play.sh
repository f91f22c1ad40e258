#!/usr/bin/env bash
# Set up, then open the playground on the shipped worlds (http://127.0.0.1:7860): CoinRun first
# (the default; it follows the keys best, docs/RESULTS.md), Boxing and CoinRun learned from video
# alone (coinrun-unlabeled) in the world picker.
# WORLD=path/to/world serves that world alone.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export GRADIO_ANALYTICS_ENABLED=False
if [ -n "${WORLD:-}" ]; then
    exec .venv/bin/genie play --world "$WORLD" "$@"
fi
exec .venv/bin/genie play --world worlds/coinrun --world worlds/boxing --world worlds/coinrun-unlabeled "$@"
