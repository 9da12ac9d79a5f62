#!/usr/bin/env bash
# The installed package (issue #13): installs the build into a scratch prefix and checks it as a
# user would meet it, from outside the source and build trees.
#   1. the files: header, libparchgrad.so with its versioned soname, libparchgrad.a, the CMake
#      package and its version file, parchgrad.pc, the command, the default model;
#   2. libparchgrad.so exports pg_ symbols only (nm -D), every function of the header among them;
#   3. the header compiles alone as C99 and as C++11 with -Wall -Wextra -pedantic -Werror;
#   4. the examples build out of tree against the prefix: examples/c with CMake's
#      find_package and with a plain `cc ... $(pkg-config --cflags --libs parchgrad)` line,
#      examples/cpp with find_package and the static library;
#   5. they run: the C example (both builds) and the Python example (ctypes + numpy) write maps
#      equal, bit for bit, to the installed CLI's for the bundled example images, with the
#      defaults, IG + class-wise ParchGrad, Grad-CAM at layer3 and IG from a blurred baseline,
#      each set by name; the C++ example explains three
#      classes; pg_stats writes the same file as `parchgrad stats`.
# Usage: capi_package.sh <build dir> <scratch dir>. Exit 0 when all hold.
set -euo pipefail
BUILD=$(cd "${1:?build dir}" && pwd)
WORK=${2:?scratch dir}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
rm -rf "$WORK"
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
P=$WORK/prefix
fail() { echo "capi_package: FAIL: $*"; exit 1; }
step() { echo "capi_package: $*"; }

# 1. Install.
cmake --install "$BUILD" --prefix "$P" > "$WORK/install.log" || { cat "$WORK/install.log"; fail "cmake --install"; }
LIBDIR=$(dirname "$(find "$P" -name 'libparchgrad.so' | head -1)")
[ -n "$LIBDIR" ] || fail "no libparchgrad.so installed"
SHARE=$P/share/parchgrad
for f in "$P/include/parchgrad/parchgrad.h" "$LIBDIR/libparchgrad.a" "$LIBDIR/cmake/parchgrad/parchgradConfig.cmake" \
         "$LIBDIR/cmake/parchgrad/parchgradConfigVersion.cmake" "$LIBDIR/pkgconfig/parchgrad.pc" "$P/bin/parchgrad" \
         "$SHARE/resnet_synth.pth" "$SHARE/stats.safetensors" "$SHARE/classes.txt" "$SHARE/examples/star.png"; do
  [ -f "$f" ] || fail "not installed: $f"
done
SONAME=$(readelf -d "$LIBDIR/libparchgrad.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[[ "$SONAME" =~ ^libparchgrad\.so\.[0-9]+\.[0-9]+$ ]] || fail "soname '$SONAME' is not libparchgrad.so.MAJOR.MINOR"
[ -f "$LIBDIR/$SONAME" ] || fail "no $SONAME beside libparchgrad.so"
step "installed into $P (soname $SONAME)"

# 2. Exported symbols.
exported=$(nm -D --defined-only "$LIBDIR/libparchgrad.so" | awk '{print $3}' | sort)
others=$(echo "$exported" | grep -v '^pg_' || true)
[ -z "$others" ] || fail "libparchgrad.so exports symbols without the pg_ prefix: $(echo $others | head -c 600)"
declared=$(grep -oE '\bpg_[a-z0-9_]+\(' "$P/include/parchgrad/parchgrad.h" | tr -d '(' | sort -u)
[ "$(echo "$declared" | wc -l)" -ge 15 ] || fail "found only $(echo "$declared" | wc -l) functions in the header"
missing=$(comm -23 <(echo "$declared") <(echo "$exported"))
[ -z "$missing" ] || fail "declared but not exported: $missing"
step "exports: $(echo "$exported" | wc -l) symbols, all pg_, every declared function"

# 3. The header alone, as C99 and as C++.
echo '#include <parchgrad/parchgrad.h>
int main(void) { return pg_version() == 0; }' > "$WORK/header.c"
cc -std=c99 -Wall -Wextra -pedantic -Werror -I"$P/include" -c "$WORK/header.c" -o "$WORK/header_c.o" ||
  fail "the header does not compile as C99 with -Wall -Wextra -pedantic -Werror"
c++ -std=c++11 -Wall -Wextra -pedantic -Werror -x c++ -I"$P/include" -c "$WORK/header.c" -o "$WORK/header_cxx.o" ||
  fail "the header does not compile as C++11 with -Wall -Wextra -pedantic -Werror"
step "header: C99 and C++11, -Wall -Wextra -pedantic -Werror"

# 4. The examples, out of tree.
for ex in c cpp; do
  cmake -S "$SRC/examples/$ex" -B "$WORK/build-$ex" -DCMAKE_PREFIX_PATH="$P" -DCMAKE_BUILD_TYPE=Release \
    > "$WORK/build-$ex.log" 2>&1 && cmake --build "$WORK/build-$ex" >> "$WORK/build-$ex.log" 2>&1 ||
    { cat "$WORK/build-$ex.log"; fail "examples/$ex does not build against the installed package"; }
done
export PKG_CONFIG_PATH=$LIBDIR/pkgconfig
# shellcheck disable=SC2046
cc -std=c99 -Wall -Wextra -pedantic -Werror "$SRC/examples/c/saliency.c" $(pkg-config --cflags --libs parchgrad) \
  -o "$WORK/saliency_cc" || fail "examples/c/saliency.c does not build with cc and pkg-config"
step "examples built: CMake (shared), cc + pkg-config, C++ (static)"

# 5. Run them against the installed CLI.
export LD_LIBRARY_PATH=$LIBDIR
IMAGES=("$SHARE"/examples/*.png)
W=$SHARE/resnet_synth.pth
S=$SHARE/stats.safetensors
compare() {  # compare DIR_A DIR_B: every .npy of A equals B's, bitwise
  /usr/bin/python3 - "$1" "$2" "${#IMAGES[@]}" <<'PY' || fail "maps of $1 and $2 differ"
import glob, os, sys
import numpy as np
a, b, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
files = sorted(glob.glob(os.path.join(a, "*.npy")))
assert len(files) == n, f"{a}: {len(files)} maps, expected {n}"
for f in files:
    x, y = np.load(f), np.load(os.path.join(b, os.path.basename(f)))
    assert x.dtype == y.dtype == np.float32 and x.shape == y.shape == (224, 224), (f, x.shape, y.shape)
    assert x.tobytes() == y.tobytes(), f"{f}: max |diff| {np.abs(x - y).max()}"
    assert np.isfinite(x).all() and x.max() > 0, f"{f}: not a map"
print(f"{n} maps equal bitwise: {a} {b}")
PY
}
run_all() {  # run_all NAME [CLI flags] -- [--set name=value ...]
  local name=$1; shift
  local cli=() set=()
  while [ "$1" != "--" ]; do cli+=("$1"); shift; done
  shift
  set=("$@")
  mkdir -p "$WORK/$name"/{cli,c,cc,py}
  "$P/bin/parchgrad" saliency --weights "$W" --out "$WORK/$name/cli" "${cli[@]}" "${IMAGES[@]}" 2> "$WORK/$name/cli.log" ||
    { cat "$WORK/$name/cli.log"; fail "parchgrad saliency ($name)"; }
  "$WORK/build-c/saliency_c" "$W" "$WORK/$name/c" "${set[@]}" "${IMAGES[@]}" > "$WORK/$name/c.log" ||
    { cat "$WORK/$name/c.log"; fail "the C example ($name)"; }
  "$WORK/saliency_cc" "$W" "$WORK/$name/cc" "${set[@]}" "${IMAGES[@]}" > /dev/null || fail "the cc-built C example ($name)"
  PARCHGRAD_LIB=$LIBDIR/libparchgrad.so /usr/bin/python3 "$SRC/examples/python/saliency.py" "$W" "$WORK/$name/py" \
    "${set[@]}" "${IMAGES[@]}" > "$WORK/$name/py.log" || { cat "$WORK/$name/py.log"; fail "the Python example ($name)"; }
  compare "$WORK/$name/cli" "$WORK/$name/c"
  compare "$WORK/$name/cli" "$WORK/$name/cc"
  compare "$WORK/$name/cli" "$WORK/$name/py"
}
run_all default --
run_all ig_cls --method ig --parchgrad cls --stats "$S" --ig-steps 4 -- \
  --set method=ig --set parchgrad=cls --set "stats=$S" --set ig-steps=4
run_all gradcam_layer3 --method gradcam --gradcam-layer layer3 -- --set method=gradcam --set gradcam-layer=layer3
run_all ig_blurred --method ig --ig-baseline blurred --ig-blur-sigma 3 --ig-steps 2 -- \
  --set method=ig --set ig-baseline=blurred --set ig-blur-sigma=3 --set --ig-steps=2
grep -q "class 4 (star)" "$WORK/default/c.log" || fail "the C example did not name star.png's class: $(cat "$WORK/default/c.log")"
out=$("$WORK/build-cpp/saliency_cpp" "$W" "$S" "$SHARE/examples/star.png") || fail "the C++ example: $out"
echo "$out"
[ "$(echo "$out" | grep -c 'rank [123]: class')" = 3 ] || fail "the C++ example did not explain three classes"
echo "$out" | grep -q "rank 1: class 4 (star)" || fail "the C++ example's first class is not star"

# pg_stats against `parchgrad stats` on a six-class folder of the example images.
mkdir -p "$WORK/data"
for img in "${IMAGES[@]}"; do
  cls=$(basename "$img" .png)
  mkdir -p "$WORK/data/$cls"
  cp "$img" "$WORK/data/$cls/"
done
"$P/bin/parchgrad" stats --weights "$W" --data "$WORK/data" --out "$WORK/cli_stats.safetensors" 2> "$WORK/stats.log" ||
  { cat "$WORK/stats.log"; fail "parchgrad stats"; }
/usr/bin/python3 - "$LIBDIR/libparchgrad.so" "$W" "$WORK/data" "$WORK/api_stats.safetensors" <<'PY' || fail "pg_stats"
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
lib.pg_last_error.restype = ctypes.c_char_p
m = ctypes.c_void_p()
assert lib.pg_model_load(sys.argv[2].encode(), None, b"cpu", ctypes.byref(m)) == 0, lib.pg_last_error()
rc = lib.pg_stats(m, sys.argv[3].encode(), None, None, 0, sys.argv[4].encode())
assert rc == 0, lib.pg_last_error()
lib.pg_model_free(m)
PY
cmp "$WORK/cli_stats.safetensors" "$WORK/api_stats.safetensors" || fail "pg_stats's file differs from parchgrad stats's"
step "pg_stats writes parchgrad stats's file, byte for byte"
step "all checks passed"
