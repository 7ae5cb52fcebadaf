#!/usr/bin/env bash
# Set up everything this project needs, idempotently: a virtual environment at .venv with the
# package and its pinned torch/torchvision, and Debian's Fashion-MNIST where we may install it.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "setup: Python 3.11 or newer is needed (found: $("$PYTHON" --version 2>&1)); set PYTHON=..." >&2
    exit 1
fi

# Fashion-MNIST's IDX files from Debian (/usr/share/datasets/fashion-mnist). Elsewhere the data
# code falls back to torchvision's downloader, so a missing package is not an error.
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; } \
            || echo "setup: could not install dataset-fashion-mnist; Fashion-MNIST will be downloaded" >&2
    else
        echo "setup: run 'sudo apt-get install dataset-fashion-mnist' to use Debian's Fashion-MNIST" >&2
    fi
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# torch and torchvision are pinned in pyproject.toml (torch==2.14.1, torchvision==0.29.1); the
# openvino extra (OpenVINO and NNCF) is installed too, so that the tests cover that runtime.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev,openvino]"
echo "setup: ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
