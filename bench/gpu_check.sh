#!/usr/bin/env bash
# GPU check of FaceLab's training engine against a plain timm-style loop (see bench/gpu_check.py).
# Run from anywhere: bash bench/gpu_check.sh [--smoke] [options]; PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
exec "$PYTHON" -u bench/gpu_check.py "$@"
