#!/usr/bin/env bash
# Vendors the few Debian files that tools/gpu_check.sh needs on a bare GPU machine (no
# package registry there) into .vendor/ (git-ignored), to be carried there with the tree.
# Run it here, on the Debian 12 development machine (apt reachable), before a GPU session:
#
#   bash tools/vendor_gpu_deps.sh
#
# It downloads the packages with `apt-get download` (nothing is installed), unpacks them
# in a temporary directory with dpkg-deb, and keeps only:
#   lib/libopenblas.so.0.gz   OpenBLAS 0.3.21, OpenMP build (libopenblas0-openmp): the
#                             SGEMM that the CPU twin of the conv dgrad (kernels/cpu/conv2d
#                             via kernels/cpu/blas.cpp) loads with dlopen
#   lib/libgfortran.so.5.gz   its Fortran runtime (libgfortran5), and that one's
#   lib/libquadmath.so.0.gz   quad-precision library (libquadmath0)
#   include/doctest/doctest.h doctest-dev's header, in case a GPU session wants to build the
#                             doctest-based host tests there too (gpu_check.sh does not)
#   MANIFEST.txt              package versions, the sha256 and size of every file
#                             (uncompressed), checked by gpu_check.sh after unpacking
# The libraries are gzip-compressed to keep the carried size small (gpu_check.sh unpacks
# them into its build directory). Assumed present on the GPU machine, so not vendored:
# glibc >= 2.34 (libgfortran5 needs GLIBC_2.34, OpenBLAS GLIBC_2.29), libstdc++, libgcc_s
# and libgomp (OpenBLAS needs GOMP_4.0/OMP_4.5, any GCC >= 6) from its C++ compiler; x86_64.
# The result replaces .vendor/ as a whole (built aside, then renamed). Prints its size.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DEST=$ROOT/.vendor
PKGS=(libopenblas0-openmp libgfortran5 libquadmath0 doctest-dev)

for tool in apt-get dpkg-deb sha256sum gzip; do
  command -v "$tool" > /dev/null || { echo "vendor_gpu_deps: $tool not found (run on the Debian dev machine)" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/debs" "$work/root" "$work/stage/lib" "$work/stage/include/doctest"

# Download only; an out-of-date package list gets one `apt-get update` (needs root).
if ! (cd "$work/debs" && apt-get download "${PKGS[@]}") > "$work/download.log" 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "vendor_gpu_deps: apt-get download failed; running apt-get update once"
    apt-get update -qq
    (cd "$work/debs" && apt-get download "${PKGS[@]}")
  else
    cat "$work/download.log" >&2
    echo "vendor_gpu_deps: apt-get download failed (an apt-get update as root may help)" >&2
    exit 1
  fi
fi

manifest=$work/stage/MANIFEST.txt
{
  echo "# .vendor/ for tools/gpu_check.sh, made by tools/vendor_gpu_deps.sh on $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "# <file as unpacked> sha256=<of the unpacked file> bytes=<unpacked> stored=<file here> from=<package>=<version> arch=<arch>"
} > "$manifest"

# deb_of PACKAGE: the downloaded .deb of that package (apt-get names it PACKAGE_VERSION_ARCH.deb).
deb_of() {
  local f
  for f in "$work"/debs/"$1"_*.deb; do
    [ -f "$f" ] && { echo "$f"; return 0; }
  done
  echo "vendor_gpu_deps: no .deb for $1" >&2
  return 1
}

# take PACKAGE PATH_IN_PACKAGE NAME: unpacks the package (once) and stores the file PATH
# (a glob; symlinks followed) as lib/NAME.gz, or as include/... when NAME contains a slash.
take() {
  local pkg=$1 pattern=$2 name=$3 deb src ver arch sha bytes stored
  deb=$(deb_of "$pkg")
  if [ ! -d "$work/root/$pkg" ]; then
    mkdir -p "$work/root/$pkg"
    dpkg-deb -x "$deb" "$work/root/$pkg"
  fi
  # shellcheck disable=SC2086  # the pattern is a glob on purpose
  src=$(ls -d "$work/root/$pkg"/$pattern 2>/dev/null | head -1 || true)
  [ -n "$src" ] || { echo "vendor_gpu_deps: $pattern not in $(basename "$deb")" >&2; return 1; }
  src=$(readlink -f "$src")
  ver=$(dpkg-deb -f "$deb" Version)
  arch=$(dpkg-deb -f "$deb" Architecture)
  sha=$(sha256sum "$src" | cut -d' ' -f1)
  bytes=$(stat -c %s "$src")
  case "$name" in
    */*) stored=include/$name
         mkdir -p "$(dirname "$work/stage/$stored")"
         cp "$src" "$work/stage/$stored"
         echo "$stored sha256=$sha bytes=$bytes stored=$stored from=$pkg=$ver arch=$arch" >> "$manifest" ;;
    *)   stored=lib/$name.gz
         gzip -9 -n -c "$src" > "$work/stage/$stored"
         echo "lib/$name sha256=$sha bytes=$bytes stored=$stored from=$pkg=$ver arch=$arch" >> "$manifest" ;;
  esac
  printf '  %-28s %10s bytes -> %-26s %10s bytes  (%s %s)\n' "$name" "$bytes" "$stored" \
    "$(stat -c %s "$work/stage/$stored")" "$pkg" "$ver"
}

echo "vendor_gpu_deps: unpacking into $DEST"
take libopenblas0-openmp 'usr/lib/*/openblas-openmp/libopenblas.so.0' libopenblas.so.0
take libgfortran5 'usr/lib/*/libgfortran.so.5' libgfortran.so.5
take libquadmath0 'usr/lib/*/libquadmath.so.0' libquadmath.so.0
take doctest-dev 'usr/include/doctest/doctest.h' doctest/doctest.h

# Self-check: the unpacked libraries resolve each other (OpenBLAS finds this libgfortran,
# that one this libquadmath) when their directory is on LD_LIBRARY_PATH, as gpu_check.sh sets.
mkdir -p "$work/check"
for gz in "$work"/stage/lib/*.gz; do gzip -dc "$gz" > "$work/check/$(basename "$gz" .gz)"; done
if command -v ldd > /dev/null; then
  resolved=$(LD_LIBRARY_PATH="$work/check" ldd "$work/check/libopenblas.so.0")
  for lib in libgfortran.so.5 libquadmath.so.0; do
    echo "$resolved" | grep -q "$lib => $work/check/$lib" ||
      { echo "$resolved" >&2; echo "vendor_gpu_deps: $lib does not resolve to the vendored copy" >&2; exit 1; }
  done
  echo "vendor_gpu_deps: ldd: OpenBLAS resolves libgfortran and libquadmath to the vendored copies"
fi

rm -rf "$DEST.new"
cp -r "$work/stage" "$DEST.new"
rm -rf "$DEST"
mv "$DEST.new" "$DEST"
echo "vendor_gpu_deps: $(du -sb "$DEST" | cut -f1) bytes in $DEST ($(du -sh "$DEST" | cut -f1)); carry '.vendor' to the GPU machine"
