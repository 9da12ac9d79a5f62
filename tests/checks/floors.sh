#!/usr/bin/env bash
# The floors hold (ARCHITECTURE.md, "Floors"; cmake/floors.cmake):
#   1. the floors CMake declared (<build>/floors.txt) are the rows of ARCHITECTURE.md's floor
#      table, with the same folders and the same "may use" column;
#   2. every project include of every source and header names a floor its file may use
#      (the build enforces this for what it compiles; this also covers headers no build of
#      this machine compiles, and says which rule broke);
#   3. the include roots do what they claim: a header of a floor above is not found from a
#      floor's root, and its own header is (so 1 and 2 describe what the compiler does).
# Usage: floors.sh <build dir> <C++ compiler>. Exit 0 when all hold.
set -u -o pipefail
BUILD=${1:?build dir}
CXX=${2:?C++ compiler}
cd "$(dirname "$0")/../.." || exit 2
fail=0
say() { echo "check_floors: $*"; fail=1; }

[ -f "$BUILD/floors.txt" ] || { echo "check_floors: $BUILD/floors.txt missing (configure first)"; exit 2; }
declare -A USES DIRS
while IFS= read -r line; do
  name=${line%%:*}
  rest=${line#*: }
  USES[$name]=$(echo "${rest%%|*}" | xargs)
  DIRS[$name]=$(echo "${rest#*|}" | xargs)
done < "$BUILD/floors.txt"

# 1. ARCHITECTURE.md: rows "| `name` | `dir/` ... | uses, comma-separated or — | ..." between the
# "<!-- floors -->" markers.
doc=$(sed -n '/<!-- floors (begin) -->/,/<!-- floors (end) -->/p' ARCHITECTURE.md | grep -E '^\| `[a-z]+` \|')
[ -n "$doc" ] || say "ARCHITECTURE.md has no floor table between <!-- floors (begin) --> and <!-- floors (end) -->"
declare -A SEEN
while IFS='|' read -r _ c_name c_dirs c_uses _; do
  name=$(echo "$c_name" | tr -d '` ')
  dirs=$(echo "$c_dirs" | grep -oE '`[^`]+`' | tr -d '`' | sed 's#/$##' | xargs)
  uses=$(echo "$c_uses" | grep -oE '`[a-z]+`' | tr -d '`' | xargs)
  SEEN[$name]=1
  if [ -z "${USES[$name]+x}" ]; then say "ARCHITECTURE.md lists floor '$name', which CMake does not declare"; continue; fi
  [ "$(echo $dirs | tr ' ' '\n' | sort | xargs)" = "$(echo ${DIRS[$name]} | tr ' ' '\n' | sort | xargs)" ] ||
    say "floor '$name': ARCHITECTURE.md's folders '$dirs', CMake's '${DIRS[$name]}'"
  [ "$(echo $uses | tr ' ' '\n' | sort | xargs)" = "$(echo ${USES[$name]} | tr ' ' '\n' | sort | xargs)" ] ||
    say "floor '$name': ARCHITECTURE.md says it may use '$uses', CMake '${USES[$name]}'"
done <<< "$doc"
for name in "${!USES[@]}"; do [ -n "${SEEN[$name]+x}" ] || say "floor '$name' is missing from ARCHITECTURE.md's table"; done

# 2. Includes. A path belongs to the floor whose folder is its longest matching prefix.
floor_of() {
  local path=$1 best="" bestlen=0 n d
  for n in "${!DIRS[@]}"; do
    for d in ${DIRS[$n]}; do
      if [[ "$path" == "$d/"* ]] && [ ${#d} -gt $bestlen ]; then best=$n; bestlen=${#d}; fi
    done
  done
  echo "$best"
}
files=0
for n in "${!DIRS[@]}"; do
  for d in ${DIRS[$n]}; do
    while IFS= read -r f; do
      files=$((files + 1))
      own=$(floor_of "$f")
      while IFS= read -r inc; do
        target=$(floor_of "$inc")
        [ -z "$target" ] && [ -e "$(dirname "$f")/$inc" ] && continue   # same-folder include
        if [ -z "$target" ]; then say "$f includes \"$inc\", which is in no floor"; continue; fi
        [ "$target" = "$own" ] && continue
        [[ " ${USES[$own]} " == *" $target "* ]] || say "$f (floor $own) includes \"$inc\" (floor $target), not in its may-use list: ${USES[$own]:-nothing}"
      done < <(grep -oE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"[^"]+"' "$f" | sed -E 's/.*"([^"]+)"/\1/')
    done < <(find "$d" -type f \( -name '*.h' -o -name '*.cpp' -o -name '*.cu' \))
  done
done
[ "$files" -gt 50 ] || say "only $files sources found (the check looked in the wrong place)"

# 3. The include roots, with a planted include in each direction.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo '#include "nn/layers.h"' > "$tmp/up.cpp"
echo '#include "kernels/params.h"' > "$tmp/own.cpp"
if "$CXX" -std=c++17 -fsyntax-only -I "$BUILD/floors/kernels" "$tmp/up.cpp" 2> /dev/null; then
  say "the kernels floor's include root finds nn/layers.h (a floor above): the roots enforce nothing"
fi
"$CXX" -std=c++17 -fsyntax-only -I "$BUILD/floors/kernels" "$tmp/own.cpp" ||
  say "the kernels floor's include root does not find kernels/params.h"

[ "$fail" = 0 ] && echo "check_floors: ${#USES[@]} floors as ARCHITECTURE.md says; $files files include only what their floor may use; roots enforce it"
exit $fail
