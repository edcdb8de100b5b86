#!/usr/bin/env bash
# One-time set-up on a fresh machine: a virtual environment in .venv with torch, timm,
# basicsr and tunify itself (editable). Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip -q --disable-pip-version-check "$@"; }
# PyPI's torchvision only imports beside the CUDA build of torch; on this kind of machine pip
# takes both from local disk. Never ask for a torch newer than 2.14.1 here.
.venv/bin/python -c "import torch, torchvision" 2>/dev/null || pip install "torch==2.14.1" "torchvision==0.29.1"
pip install "setuptools>=77" wheel cython
pip install --no-build-isolation -e ".[basicsr,test,export,browser,eval,realesrgan,spandrel]"
# basicsr 1.4.2 fails to import on current torchvision; the fork basicsr-fixed is the same
# package fixed. Without build isolation it takes 3 s (with it, pip builds a second torch).
.venv/bin/python -c "import basicsr" 2>/dev/null || pip install --no-build-isolation --no-deps "basicsr-fixed==1.4.2"
# The demo's browser test drives Debian's headless Chromium (downloading a browser does not work
# here); install it when apt is available and it is missing.
if ! command -v chromedriver >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver) >/dev/null
fi
.venv/bin/python -c "import tunify, timm, basicsr; print('tunify', tunify.__version__, 'ready in .venv')"
