#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install the pinned stack.
# Idempotent: each step is skipped when its stamp says it is done and its check still passes.
#
#   bash tools/setup_env.sh            # installs into ./.venv
#   MASKAQ_VENV=/path bash tools/setup_env.sh
#
# mmcv 2.1.0 has no wheel on PyPI for this stack. A prebuilt wheel is taken from
# MMCV_WHEEL_DIR (default: ../shared/wheels beside the checkout) when present; otherwise the
# sdist is built from source with its C++ ops, with -std=c++17 raised to -std=c++20 (torch 2.14's
# ATen headers require C++20). That build takes 20-35 minutes on 2 cores; pip's cache keeps it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MASKAQ_VENV:-$ROOT/.venv}"
MMCV_WHEEL_DIR="${MMCV_WHEEL_DIR:-$ROOT/../shared/wheels}"
PY="$VENV/bin/python"
STAMP="$VENV/.maskaq-stamp"
REQ_HASH="$(cat "$ROOT/requirements/runtime.txt" "$ROOT/requirements/tests.txt" "$ROOT/setup.py" "$0" | sha256sum | cut -c1-16)"

log() { printf '[setup_env] %s\n' "$*" >&2; }

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$REQ_HASH" ]] && "$PY" -c 'import maskaq_plugin, mmcv.ops, nncf, mmdet, mmseg' 2>/dev/null \
   && ls /usr/share/doc/opencv-doc/examples/data/digits.png* >/dev/null 2>&1; then
  log "environment $VENV is up to date; nothing to install"
  exit 0
fi

if [[ ! -x "$PY" ]]; then
  log "creating virtual environment $VENV"
  python3 -m venv "$VENV"
fi
PIP=("$PY" -m pip install --disable-pip-version-check -q)

log "1/6 build tools (setuptools>=77.0.3,<81: mmcv's setup.py imports pkg_resources)"
"${PIP[@]}" 'pip>=23.2' 'setuptools>=77.0.3,<81' wheel ninja

log "2/6 torch==2.14.1 torchvision==0.29.1 (pinned; pip must never choose another torch)"
"$PY" -c 'import torch, torchvision, sys; sys.exit(not (torch.__version__.startswith("2.14.1") and torchvision.__version__.startswith("0.29.1")))' 2>/dev/null \
  || "${PIP[@]}" torch==2.14.1 torchvision==0.29.1

log "3/6 mmcv==2.1.0 with C++ ops"
if ! "$PY" -c 'import mmcv, mmcv.ops; assert mmcv.__version__ == "2.1.0"' 2>/dev/null; then
  if ls "$MMCV_WHEEL_DIR"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
    log "   using the prebuilt wheel in $MMCV_WHEEL_DIR"
    "${PIP[@]}" --no-deps --find-links "$MMCV_WHEEL_DIR" mmcv==2.1.0
  else
    log "   no prebuilt wheel in $MMCV_WHEEL_DIR: building from source (20-35 min on 2 cores)"
    SRC="$(mktemp -d)"
    "$PY" -m pip download --no-deps --no-binary :all: -d "$SRC" mmcv==2.1.0
    tar -xzf "$SRC"/mmcv-2.1.0.tar.gz -C "$SRC"
    sed -i 's/-std=c++17/-std=c++20/g' "$SRC/mmcv-2.1.0/setup.py"
    MMCV_WITH_OPS=1 MAX_JOBS="$(nproc)" "$PY" -m pip wheel --no-deps --no-build-isolation -w "$SRC/dist" "$SRC/mmcv-2.1.0" \
      && "${PIP[@]}" --no-deps "$SRC"/dist/mmcv-2.1.0-*.whl
  fi
  "${PIP[@]}" addict mmengine==0.10.7 'opencv-python>=4' packaging Pillow pyyaml yapf
fi

log "4/6 OpenMMLab, NNCF, OpenVINO and the rest (requirements/runtime.txt, tests.txt)"
"${PIP[@]}" -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/tests.txt"

log "   system data: OpenCV's handwritten digits (Debian opencv-doc) for the demo, tests and benchmarks"
if ! ls /usr/share/doc/opencv-doc/examples/data/digits.png* >/dev/null 2>&1; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    (apt-get install -y -q opencv-doc >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q opencv-doc >/dev/null; }) \
      || log "   WARNING: apt-get install opencv-doc failed; the demo and digit tests need it"
  else
    log "   WARNING: digits.png missing: run 'sudo apt-get install opencv-doc' (demo and digit tests need it)"
  fi
fi

log "5/6 this package (editable)"
"${PIP[@]}" --no-deps --no-build-isolation -e "$ROOT"

log "6/6 prebuild NNCF's CPU extension (its first build outlasts NNCF's 60 s load timeout)"
NNCF_EXTENSION_LOAD_TIMEOUT=0 "$PY" -c 'import nncf.torch; nncf.torch.force_build_cpu_extensions()' >/dev/null 2>&1 \
  || log "   NNCF extension prebuild failed (NNCF falls back to its pure torch path)"

echo "$REQ_HASH" > "$STAMP"
log "done: $VENV"
