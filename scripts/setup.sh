#!/usr/bin/env bash
# Installs everything moetrain needs on a Debian machine and builds it:
#   1. Debian packages (compiler, CMake, Open MPI, HDF5, yaml-cpp, Boost,
#      GoogleTest, ...) with apt-get;
#   2. a Python virtual environment (.venv) holding the PyTorch 2.11 wheel,
#      whose LibTorch (headers, libraries, CMake config) the build uses;
#   3. configure and build into build/ (CMake downloads SentencePiece's
#      source from PyPI once and builds it: cmake/sentencepiece.cmake).
# Idempotent: a second run only rebuilds what changed.
#
# Environment:
#   MOETRAIN_WHEEL_CACHE  where downloaded wheels are kept (default ~/.cache/moetrain/wheels)
#   MOETRAIN_BUILD_DIR    build directory (default build)
#   MOETRAIN_SKIP_APT=1   do not run apt-get (packages already installed)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${MOETRAIN_BUILD_DIR:-build}"
WHEEL_CACHE="${MOETRAIN_WHEEL_CACHE:-$HOME/.cache/moetrain/wheels}"
TORCH_VERSION="2.11.0"

log() { printf '[setup] %s\n' "$*"; }

# --- 1. Debian packages -----------------------------------------------------
# The toolchain here; the libraries in scripts/debian-libraries.txt.
PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  clang  # the fuzz targets (libFuzzer): scripts/fuzz.sh
  prometheus curl  # the monitoring tests: a real Prometheus scrapes a run; promtool checks the rules
  python3 python3-venv python3-pip
  iproute2 iputils-ping
)
mapfile -t -O "${#PACKAGES[@]}" PACKAGES < <(sed 's/#.*//' "$ROOT/scripts/debian-libraries.txt" | tr -s ' \t' '\n' | sed '/^$/d')
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 && "${MOETRAIN_SKIP_APT:-0}" != 1 ]]; then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  log "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  log "Debian packages present"
fi

# --- 2. LibTorch from the PyTorch wheel ---------------------------------------
PY="$ROOT/.venv/bin/python"
if [[ ! -x "$PY" ]]; then
  log "creating .venv"
  python3 -m venv "$ROOT/.venv"
fi
have_torch="$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)"
TORCH_CMAKE=""
if [[ "$have_torch" == "$TORCH_VERSION" ]]; then
  log "torch $have_torch already in .venv"
else
  mkdir -p "$WHEEL_CACHE"
  log "fetching torch==$TORCH_VERSION and its dependencies into $WHEEL_CACHE (cached for next time)"
  if "$PY" -m pip download -q "torch==$TORCH_VERSION" numpy -d "$WHEEL_CACHE"; then
    "$PY" -m pip install -q --no-index --find-links "$WHEEL_CACHE" "torch==$TORCH_VERSION" numpy
  else
    log "WARNING: the PyTorch wheel cannot be had; falling back to Debian's libtorch-dev"
    log "WARNING: Debian's LibTorch is older than 2.11 and may not build moetrain"
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q libtorch-dev
    TORCH_CMAKE="/usr/share/cmake/Torch"
  fi
fi
# Python packages the tests use to cross-check moetrain independently of the
# C++ code: h5py reads checkpoints, sacrebleu scores BLEU and chrF, safetensors
# reads exports, transformers and peft load them, sentencepiece and protobuf
# let transformers build NLLB's tokenizer from a SentencePiece model,
# tensorboard reads a run's event files. Tests that need one skip when it is
# missing. (package:module)
for spec in h5py:h5py sacrebleu:sacrebleu safetensors:safetensors sentencepiece:sentencepiece protobuf:google.protobuf \
            tensorboard:tensorboard ctranslate2:ctranslate2; do
  pkg=${spec%%:*}
  if ! "$PY" -c "import ${spec#*:}" 2>/dev/null; then
    log "installing $pkg into .venv"
    "$PY" -m pip download -q "$pkg" -d "$WHEEL_CACHE" && \
      "$PY" -m pip install -q --no-index --find-links "$WHEEL_CACHE" "$pkg" || log "WARNING: $pkg could not be installed"
  fi
done
# transformers loads NLLB-MoE-compatible exports and computes their logits;
# peft reads LoRA adapters. Both depend on torch, so they are resolved
# together with the pinned torch: pip must never replace the wheel whose
# LibTorch the build links.
if ! "$PY" -c "import transformers, peft" 2>/dev/null; then
  log "installing transformers and peft into .venv (keeping torch $TORCH_VERSION)"
  "$PY" -m pip download -q "torch==$TORCH_VERSION" transformers peft -d "$WHEEL_CACHE" && \
    "$PY" -m pip install -q --no-index --find-links "$WHEEL_CACHE" "torch==$TORCH_VERSION" transformers peft \
    || log "WARNING: transformers and peft could not be installed"
fi

if [[ -z "$TORCH_CMAKE" ]]; then
  TORCH_CMAKE="$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
  wheel_cuda="$("$PY" -c 'import torch; print(torch.version.cuda or "none")')"
  toolkit_cuda="none"
  if [[ -x /usr/local/cuda/bin/nvcc ]]; then
    toolkit_cuda="$(/usr/local/cuda/bin/nvcc --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')"
  fi
  log "torch wheel CUDA: $wheel_cuda; /usr/local/cuda: $toolkit_cuda"
  if [[ "$wheel_cuda" != none && "$toolkit_cuda" != none && "${wheel_cuda%%.*}" != "${toolkit_cuda%%.*}" ]]; then
    log "WARNING: CUDA major versions differ (wheel $wheel_cuda, toolkit $toolkit_cuda): CUDA sources may not build"
  fi
fi

# --- 3. configure and build ---------------------------------------------------
if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
  log "configuring $BUILD_DIR"
  cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DCMAKE_PREFIX_PATH="$TORCH_CMAKE" > "$BUILD_DIR.configure.log" 2>&1 \
    || { cat "$BUILD_DIR.configure.log"; exit 1; }
fi
log "building (ninja -C $BUILD_DIR)"
cmake --build "$BUILD_DIR" -j "$(nproc)"
if grep -q '^MOETRAIN_WITH_CUDA_KERNELS:BOOL=ON' "$BUILD_DIR/CMakeCache.txt"; then
  log "CUDA sources compiled (fused kernels for sm $(sed -n 's/^MOETRAIN_CUDA_ARCHITECTURES:STRING=//p' "$BUILD_DIR/CMakeCache.txt"))"
else
  log "CUDA sources not compiled (no nvcc, or LibTorch without CUDA): every op runs its ATen reference"
fi
log "done: $BUILD_DIR/bin/moetrain"
