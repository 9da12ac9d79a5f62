#!/usr/bin/env bash
# Prints the SASS (machine code) of a cubin, for the compile gate on the tensor-core kernels.
#
# Usage: tests/checks/sass_dump.sh KERNEL.cubin
#
# With a CUDA toolkit that has cuobjdump (the GPU machines), that is used. The toolkit on the
# CI machines is nvcc and ptxas only, so otherwise the disassembler comes from Debian's
# nvidia-cuda-toolkit package (non-free, CUDA 11.8): the package is downloaded once (not
# installed; no other package is touched) into .cache/cuda-tools/ and nvdisasm is taken from
# it. CUDA 11.8 knows sm_90's instruction set but not the ELF header layout that CUDA 12.8+
# writes (ABI version 8, architecture in bits 8-15 of e_flags), so a copy of the cubin gets the
# older header (ABI version 7, EF_CUDA_SM90 | EF_CUDA_VIRTUAL_SM(SM90)); the code is unchanged.
set -euo pipefail
cubin="${1:?usage: tests/checks/sass_dump.sh KERNEL.cubin}"
[ -f "$cubin" ] || { echo "sass_dump: $cubin: no such file" >&2; exit 2; }
root="$(cd "$(dirname "$0")/../.." && pwd)"

if command -v cuobjdump > /dev/null 2>&1; then
  exec cuobjdump --dump-sass "$cubin"
fi
for d in /usr/local/cuda/bin "${CUDA_HOME:-/nonexistent}/bin"; do
  if [ -x "$d/cuobjdump" ]; then exec "$d/cuobjdump" --dump-sass "$cubin"; fi
done

cache="${PARCHGRAD_TOOLS_CACHE:-$root/.cache/cuda-tools}"
nvdisasm="$cache/usr/bin/nvdisasm"
if [ ! -x "$nvdisasm" ]; then
  mkdir -p "$cache/apt/lists/partial" "$cache/apt/archives/partial"
  echo "deb http://deb.debian.org/debian bookworm non-free" > "$cache/apt/sources.list"
  opts=(-o "Dir::Etc::SourceList=$cache/apt/sources.list" -o "Dir::Etc::SourceParts=$cache/apt/none"
        -o "Dir::State::Lists=$cache/apt/lists" -o "Dir::Cache::Archives=$cache/apt/archives"
        -o "APT::Sandbox::User=root" -q)
  echo "sass_dump: fetching nvdisasm from Debian's nvidia-cuda-toolkit package (once) ..." >&2
  apt-get "${opts[@]}" update > "$cache/apt/update.log" 2>&1 ||
    { echo "sass_dump: apt-get update of the non-free list failed (see $cache/apt/update.log)" >&2; exit 2; }
  (cd "$cache/apt" && apt-get "${opts[@]}" download nvidia-cuda-toolkit > download.log 2>&1) ||
    { echo "sass_dump: cannot download nvidia-cuda-toolkit (see $cache/apt/download.log)" >&2; exit 2; }
  dpkg-deb --fsys-tarfile "$cache"/apt/nvidia-cuda-toolkit_*.deb | tar -x -C "$cache" ./usr/bin/nvdisasm
  rm -f "$cache"/apt/nvidia-cuda-toolkit_*.deb
fi

tmp="$(mktemp --suffix=.cubin)"
trap 'rm -f "$tmp"' EXIT
python3 - "$cubin" "$tmp" <<'EOF'
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
if b[:4] != b"\x7fELF" or b[4] != 2:
    sys.exit(f"sass_dump: {sys.argv[1]}: not a 64-bit ELF cubin")
flags = struct.unpack_from("<I", b, 48)[0]
if b[8] >= 8:  # CUDA 12.8+ layout: the SM number in bits 8-15
    sm = (flags >> 8) & 0xFF
    b[8] = 7
    struct.pack_into("<I", b, 48, sm | (0x5 << 8) | (sm << 16))  # SM, 64-bit addresses, virtual SM
open(sys.argv[2], "wb").write(b)
EOF
"$nvdisasm" "$tmp"
