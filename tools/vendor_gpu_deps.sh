#!/usr/bin/env bash
# Vendors the Debian files that tools/gpu_check.sh needs on a bare GPU machine (no package
# registry there, no pkg-config, none of the engine's -dev packages) into .vendor/
# (git-ignored), to be carried there with the tree. Run it here, on the Debian 12
# development machine (apt reachable), before a GPU session:
#
#   bash tools/vendor_gpu_deps.sh
#
# It downloads the packages with `apt-get download` (nothing is installed), unpacks them
# in a temporary directory with dpkg-deb, and keeps only:
#   lib/libopenblas.so.0.gz   OpenBLAS 0.3.21, OpenMP build (libopenblas0-openmp): the
#                             SGEMM that the CPU twins of the GPU kernel test and the engine's
#                             CPU backend (kernels/cpu/blas.cpp) load with dlopen
#   lib/libgfortran.so.5.gz   its Fortran runtime (libgfortran5), and that one's
#   lib/libquadmath.so.0.gz   quad-precision library (libquadmath0)
#   include/doctest/doctest.h doctest-dev's header (also inside deps.tar.gz)
#   deps.tar.gz               the prefix for the full engine build (`cmake
#                             -DPARCHGRAD_DEPS_PREFIX=<unpacked dir>`, see CMakeLists.txt):
#       include/zip.h, zipconf.h            libzip-dev
#       include/nlohmann/                   nlohmann-json3-dev (header-only)
#       include/CLI/                        libcli11-dev (header-only)
#       include/stb/stb_image.h, stb_image_write.h, stb_easy_font.h   libstb-dev (the three
#                                           the engine includes; it compiles stb itself)
#       include/pugixml.hpp, pugiconfig.hpp libpugixml-dev
#       include/jpeglib.h, jconfig.h, jmorecfg.h, jerror.h
#                                           libjpeg62-turbo-dev (jconfig.h from its multiarch
#                                           directory, next to jpeglib.h here)
#       include/boost/                      libboost1.74-dev: only the Boost.Math headers the
#                                           engine's sources pull in (found with `g++ -M` on
#                                           the files that include boost, for C++14/17/20,
#                                           with and without the release flags) plus all of
#                                           boost/config; not the 160 MB tree
#       include/doctest/doctest.h           doctest-dev (the unit tests)
#       lib/libzip.so.4, lib/libzip.so      libzip4 (the link name is a symbolic link)
#       lib/libpugixml.a                    libpugixml-dev (static: nothing to find at run time)
#       lib/libjpeg.a                       libjpeg62-turbo-dev (static, the same libjpeg-turbo
#                                           2.1.5 as the libjpeg.so.62 that PIL links)
#       lib/fallback/libcrypto.so.3, libbz2.so.1.0, libz.so.1
#                                           libzip's own dependencies (libssl3, libbz2-1.0,
#                                           zlib1g): gpu_check.sh puts one next to libzip only
#                                           where the GPU machine's loader has none
#   MANIFEST.txt              package versions, the sha256 and size of every file
#                             (uncompressed; the members of deps.tar.gz as deps/<path>, and the
#                             archive itself), checked by gpu_check.sh after unpacking
# The libraries are gzip-compressed to keep the carried size small (gpu_check.sh unpacks
# them into its build directory). Assumed present on the GPU machine, so not vendored:
# glibc >= 2.34 (libgfortran5 needs GLIBC_2.34, OpenBLAS GLIBC_2.29, libzip GLIBC_2.33),
# libstdc++, libgcc_s and libgomp (OpenBLAS needs GOMP_4.0/OMP_4.5, any GCC >= 6) from its
# C++ compiler, CMake >= 3.25, the CUDA toolkit and cuDNN/cuBLAS; x86_64.
# Self-checks before anything is replaced: the vendored libraries resolve each other (ldd),
# and every engine source preprocesses (`g++ -M`) against the vendored include directory
# without reaching /usr/include for any vendored library.
# The result replaces .vendor/ as a whole (built aside, then renamed). Prints its size.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DEST=$ROOT/.vendor
PKGS=(libopenblas0-openmp libgfortran5 libquadmath0 doctest-dev
      libzip-dev libzip4 libssl3 libbz2-1.0 zlib1g nlohmann-json3-dev libcli11-dev libstb-dev
      libpugixml-dev libjpeg62-turbo-dev libboost1.74-dev)

for tool in apt-get dpkg-deb sha256sum gzip tar g++; do
  command -v "$tool" > /dev/null || { echo "vendor_gpu_deps: $tool not found (run on the Debian dev machine)" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/debs" "$work/root" "$work/stage/lib" "$work/stage/include/doctest" "$work/deps/include" \
  "$work/deps/lib/fallback"

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
  echo "# deps/<path>: a member of deps.tar.gz (link=<target>: a symbolic link in the archive)"
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
# unpacked PACKAGE: the package's files, unpacked once; prints the directory.
unpacked() {
  local deb
  deb=$(deb_of "$1")
  if [ ! -d "$work/root/$1" ]; then
    mkdir -p "$work/root/$1"
    dpkg-deb -x "$deb" "$work/root/$1"
  fi
  echo "$work/root/$1"
}
# origin PACKAGE: "from=PACKAGE=VERSION arch=ARCH" for the manifest.
origin() {
  local deb
  deb=$(deb_of "$1")
  echo "from=$1=$(dpkg-deb -f "$deb" Version) arch=$(dpkg-deb -f "$deb" Architecture)"
}

# take PACKAGE PATH_IN_PACKAGE NAME: stores the file PATH (a glob; symlinks followed) as
# lib/NAME.gz, or as include/... when NAME contains a slash.
take() {
  local pkg=$1 pattern=$2 name=$3 dir src sha bytes stored
  dir=$(unpacked "$pkg")
  # shellcheck disable=SC2086  # the pattern is a glob on purpose
  src=$(ls -d "$dir"/$pattern 2>/dev/null | head -1 || true)
  [ -n "$src" ] || { echo "vendor_gpu_deps: $pattern not in $pkg" >&2; return 1; }
  src=$(readlink -f "$src")
  sha=$(sha256sum "$src" | cut -d' ' -f1)
  bytes=$(stat -c %s "$src")
  case "$name" in
    */*) stored=include/$name
         mkdir -p "$(dirname "$work/stage/$stored")"
         cp "$src" "$work/stage/$stored"
         echo "$stored sha256=$sha bytes=$bytes stored=$stored $(origin "$pkg")" >> "$manifest" ;;
    *)   stored=lib/$name.gz
         gzip -9 -n -c "$src" > "$work/stage/$stored"
         echo "lib/$name sha256=$sha bytes=$bytes stored=$stored $(origin "$pkg")" >> "$manifest" ;;
  esac
  printf '  %-28s %10s bytes -> %-26s %10s bytes  (%s)\n' "$name" "$bytes" "$stored" \
    "$(stat -c %s "$work/stage/$stored")" "$(origin "$pkg" | cut -d' ' -f1)"
}

# dep PACKAGE PATH_IN_PACKAGE DEST: copies one file (a glob; symlinks followed) to
# deps/DEST. dep_tree PACKAGE DIR_IN_PACKAGE DEST: every file below DIR to deps/DEST/.
# Both record the package in $work/deps.origin (one "DEST origin" line per file).
dep() {
  local pkg=$1 pattern=$2 dest=$3 dir src
  dir=$(unpacked "$pkg")
  # shellcheck disable=SC2086
  src=$(ls -d "$dir"/$pattern 2>/dev/null | head -1 || true)
  [ -n "$src" ] || { echo "vendor_gpu_deps: $pattern not in $pkg" >&2; return 1; }
  mkdir -p "$(dirname "$work/deps/$dest")"
  cp "$(readlink -f "$src")" "$work/deps/$dest"
  echo "$dest $(origin "$pkg")" >> "$work/deps.origin"
}
dep_tree() {
  local pkg=$1 sub=$2 dest=$3 dir f rel
  dir=$(unpacked "$pkg")
  [ -d "$dir/$sub" ] || { echo "vendor_gpu_deps: $sub not in $pkg" >&2; return 1; }
  while IFS= read -r -d '' f; do
    rel=${f#"$dir/$sub/"}
    mkdir -p "$(dirname "$work/deps/$dest/$rel")"
    cp "$(readlink -f "$f")" "$work/deps/$dest/$rel"
    echo "$dest/$rel $(origin "$pkg")" >> "$work/deps.origin"
  done < <(find "$dir/$sub" \( -type f -o -type l \) -print0 | sort -z)
}

echo "vendor_gpu_deps: unpacking into $DEST"
take libopenblas0-openmp 'usr/lib/*/openblas-openmp/libopenblas.so.0' libopenblas.so.0
take libgfortran5 'usr/lib/*/libgfortran.so.5' libgfortran.so.5
take libquadmath0 'usr/lib/*/libquadmath.so.0' libquadmath.so.0
take doctest-dev 'usr/include/doctest/doctest.h' doctest/doctest.h

# ---- the engine's build prefix (deps.tar.gz) ---------------------------------------------------
: > "$work/deps.origin"
dep libzip-dev usr/include/zip.h include/zip.h
dep libzip-dev usr/include/zipconf.h include/zipconf.h
dep libzip4 'usr/lib/*/libzip.so.4' lib/libzip.so.4
ln -s libzip.so.4 "$work/deps/lib/libzip.so"
dep libpugixml-dev usr/include/pugixml.hpp include/pugixml.hpp
dep libpugixml-dev usr/include/pugiconfig.hpp include/pugiconfig.hpp
dep libpugixml-dev 'usr/lib/*/libpugixml.a' lib/libpugixml.a
for h in jpeglib.h jmorecfg.h jerror.h; do
  dep libjpeg62-turbo-dev "usr/include/$h" "include/$h"
done
dep libjpeg62-turbo-dev 'usr/include/*/jconfig.h' include/jconfig.h
dep libjpeg62-turbo-dev 'usr/lib/*/libjpeg.a' lib/libjpeg.a
dep_tree nlohmann-json3-dev usr/include/nlohmann include/nlohmann
dep_tree libcli11-dev usr/include/CLI include/CLI
for h in stb_image.h stb_image_write.h stb_easy_font.h; do
  dep libstb-dev "usr/include/stb/$h" "include/stb/$h"
done
dep doctest-dev usr/include/doctest/doctest.h include/doctest/doctest.h
dep libssl3 'usr/lib/*/libcrypto.so.3' lib/fallback/libcrypto.so.3
dep libbz2-1.0 'lib/*/libbz2.so.1.0' lib/fallback/libbz2.so.1.0
dep zlib1g 'lib/*/libz.so.1' lib/fallback/libz.so.1

# Boost: the headers that the engine's boost-including sources reach, with the unpacked
# package's whole tree first on the include path (so nothing comes from /usr/include).
boost_root=$(unpacked libboost1.74-dev)/usr/include
boost_users=$(grep -rlE '#include <boost/' --include='*.cpp' --include='*.h' \
  kernels nn autograd parchgrad weights tools/lib tools/cli tests/unit tests/tools | sort)
[ -n "$boost_users" ] || { echo "vendor_gpu_deps: no source includes boost?" >&2; exit 1; }
: > "$work/boost.deps"
for src in $boost_users; do
  case "$src" in *.h) continue ;; esac  # headers are reached through the .cpp files
  for std in c++14 c++17 c++20; do
    for flags in "" "-O3 -DNDEBUG -fopenmp"; do
      # shellcheck disable=SC2086
      g++ -std=$std $flags -M -MG -I"$ROOT" -isystem "$boost_root" -isystem "$work/deps/include" "$src" \
        >> "$work/boost.deps" 2> "$work/boost.err" ||
        { cat "$work/boost.err" >&2; echo "vendor_gpu_deps: g++ -M $src failed" >&2; exit 1; }
    done
  done
done
tr ' \\' '\n\n' < "$work/boost.deps" | grep "^$boost_root/boost/" | sort -u > "$work/boost.list"
find "$boost_root/boost/config" -type f >> "$work/boost.list"
boost_origin=$(origin libboost1.74-dev)
sort -u "$work/boost.list" | while IFS= read -r f; do
  rel=${f#"$boost_root/"}
  mkdir -p "$(dirname "$work/deps/include/$rel")"
  cp "$(readlink -f "$f")" "$work/deps/include/$rel"
  echo "include/$rel $boost_origin" >> "$work/deps.origin"
done
echo "  boost: $(find "$work/deps/include/boost" -type f | wc -l) headers, $(du -sb "$work/deps/include/boost" | cut -f1) bytes (of $(du -sb "$boost_root/boost" | cut -f1))"

# Self-check 1: every engine source preprocesses against the vendored include directory and
# none reaches a system copy of a vendored library (-MG: the CUDA toolkit's headers may be
# missing here; they are not vendored).
vendored_re='^/usr/(local/)?include/(boost|CLI|nlohmann|stb|pugixml|pugiconfig|zip|zipconf|doctest|jpeglib|jmorecfg|jerror|([^/]*/)?jconfig)'
find kernels/cpu nn autograd parchgrad weights tools/lib tools/cli tests/unit tests/tools kernels/simt \
  -name '*.cpp' | sort > "$work/sources"
bad=0
while IFS= read -r src; do
  for pass in 1; do  # one pass: no source tests the build for a device (tests/checks/device_seam.sh)
    if ! g++ -std=c++17 -O3 -DNDEBUG -fopenmp '-DPARCHGRAD_OPENBLAS_DIR="/x"' \
        '-DPARCHGRAD_VERSION="0"' -M -MG -I"$ROOT" -isystem "$work/deps/include" \
        -isystem "$work/deps/include/stb" "$src" > "$work/m.out" 2> "$work/m.err"; then
      cat "$work/m.err" >&2
      echo "vendor_gpu_deps: $src does not preprocess against the vendored headers" >&2
      bad=1
    elif tr ' \\' '\n\n' < "$work/m.out" | grep -E "$vendored_re" > "$work/m.sys"; then
      echo "vendor_gpu_deps: $src reaches system headers of a vendored library:" >&2
      head -5 "$work/m.sys" >&2
      bad=1
    fi
  done
done < "$work/sources"
[ "$bad" = 0 ] || exit 1
echo "vendor_gpu_deps: g++ -M: $(wc -l < "$work/sources") engine sources use only the vendored headers"

# Self-check 2: the unpacked libraries resolve each other (OpenBLAS finds this libgfortran,
# that one this libquadmath; libzip its dependencies) when their directory is on
# LD_LIBRARY_PATH, as gpu_check.sh sets.
mkdir -p "$work/check"
for gz in "$work"/stage/lib/*.gz; do gzip -dc "$gz" > "$work/check/$(basename "$gz" .gz)"; done
if command -v ldd > /dev/null; then
  resolved=$(LD_LIBRARY_PATH="$work/check" ldd "$work/check/libopenblas.so.0")
  for lib in libgfortran.so.5 libquadmath.so.0; do
    echo "$resolved" | grep -q "$lib => $work/check/$lib" ||
      { echo "$resolved" >&2; echo "vendor_gpu_deps: $lib does not resolve to the vendored copy" >&2; exit 1; }
  done
  resolved=$(LD_LIBRARY_PATH="$work/deps/lib/fallback" ldd "$work/deps/lib/libzip.so.4")
  for lib in libcrypto.so.3 libbz2.so.1.0 libz.so.1; do
    echo "$resolved" | grep -q "$lib => $work/deps/lib/fallback/$lib" ||
      { echo "$resolved" >&2; echo "vendor_gpu_deps: libzip's $lib does not resolve to the fallback copy" >&2; exit 1; }
  done
  echo "vendor_gpu_deps: ldd: OpenBLAS resolves libgfortran and libquadmath, libzip its three dependencies, to the vendored copies"
fi

# The archive: members sorted, times and owners fixed, so the same packages give the same bytes.
(cd "$work/deps" && find . \( -type f -o -type l \) | sed 's|^\./||' | LC_ALL=C sort) > "$work/members"
while IFS= read -r m; do
  if [ -L "$work/deps/$m" ]; then
    echo "deps/$m link=$(readlink "$work/deps/$m") stored=deps.tar.gz $(awk -v p="$(dirname "$m")/$(readlink "$work/deps/$m")" '$1 == p { $1 = ""; print substr($0, 2); exit }' "$work/deps.origin")"
  else
    org=$(awk -v p="$m" '$1 == p { $1 = ""; print substr($0, 2); exit }' "$work/deps.origin")
    [ -n "$org" ] || { echo "vendor_gpu_deps: no package recorded for $m" >&2; exit 1; }
    echo "deps/$m sha256=$(sha256sum "$work/deps/$m" | cut -d' ' -f1) bytes=$(stat -c %s "$work/deps/$m") stored=deps.tar.gz $org"
  fi
done < "$work/members" >> "$manifest"
tar -C "$work/deps" --owner=0 --group=0 --numeric-owner --mtime=@0 --no-recursion \
  -cf - -T "$work/members" | gzip -9 -n > "$work/stage/deps.tar.gz"
echo "deps.tar.gz sha256=$(sha256sum "$work/stage/deps.tar.gz" | cut -d' ' -f1) bytes=$(stat -c %s "$work/stage/deps.tar.gz") stored=deps.tar.gz from=the-files-above" >> "$manifest"
printf '  %-28s %10s bytes -> %-26s %10s bytes  (%s files)\n' "deps/" "$(du -sb "$work/deps" | cut -f1)" \
  deps.tar.gz "$(stat -c %s "$work/stage/deps.tar.gz")" "$(wc -l < "$work/members")"

rm -rf "$DEST.new"
cp -r "$work/stage" "$DEST.new"
rm -rf "$DEST"
mv "$DEST.new" "$DEST"
echo "vendor_gpu_deps: $(du -sb "$DEST" | cut -f1) bytes in $DEST ($(du -sh "$DEST" | cut -f1)); carry '.vendor' to the GPU machine"
