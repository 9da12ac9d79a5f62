#!/usr/bin/env bash
# Installs parchgrad's dependencies from Debian 12 packages and builds it into build/.
# Usage: bash tools/setup.sh   (as root, or with sudo available)
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake pkg-config
  libopenblas-openmp-dev   # SGEMM for convolutions and linear layers, OpenMP-threaded
  libstb-dev               # PNG decoding and PNG writing
  libjpeg62-turbo-dev      # JPEG decoding: libjpeg-turbo's libjpeg API, the library and the calls
                           # PIL decodes JPEGs with (its _imaging links libjpeg.so.62), so that
                           # decoded JPEGs equal PIL's bit for bit
  libzip-dev               # reading torch .pth zip archives
  nlohmann-json3-dev       # safetensors headers, JSON lines output
  libcli11-dev             # command line
  libboost-math-dev        # normal and Student t distributions for the statistics
  libpugixml-dev           # Pascal VOC XML box annotations (eval)
  doctest-dev              # unit tests
  clang libclang-rt-14-dev # fuzz tests (tests/fuzz): clang++ -fsanitize=fuzzer,address,undefined;
                           # Debian 12 ships libFuzzer and the sanitizer runtimes in
                           # libclang-rt-14-dev, only a Recommends of clang (skipped below)
  python3-torch python3-torchvision python3-scipy python3-pil python3-numpy python3-pytest
                           # reference implementations for the parity tests, model training
  openmpi-bin              # mpirun, for tests/python/test_scale_out.py (three processes of
                           # `--shard auto`); the engine does not link MPI: a process only
                           # reads the rank variables its launcher sets
)

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)"
