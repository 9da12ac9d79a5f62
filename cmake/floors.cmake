# The floors of the project (ARCHITECTURE.md, "Floors"): each folder of sources is a floor
# that may include its own headers and those of the floors it lists, and nothing else. The
# rule is enforced by the compiler, not by review: a floor's sources are compiled with one
# include root, <build>/floors/<floor>/, that holds symbolic links to exactly its own folders
# and those of the floors it may use, so `#include "nn/layers.h"` in kernels/ fails to build
# ("No such file"). The project root itself is never on a floor's include path.
#
#   pg_floor(<name> DIRS <folder>... [USES <floor>...])
#     declares a floor: its source folders (relative to the project root) and the floors below
#     it that it may use. USES must be closed (a floor lists everything its used floors use),
#     so the listed column in ARCHITECTURE.md is the whole truth; a gap is a configure error.
#   pg_floor_root(<name> <out-var>): the floor's include root.
#   pg_floor_sources(<target> <name>): gives <target> the floor's include root (PRIVATE).
#
# Every declared floor is written to <build>/floors.txt ("<name>: <uses...>"), which the
# CTest test `floors` (tools/check_floors.sh) compares with ARCHITECTURE.md's table and with
# the includes of the sources.
include_guard(GLOBAL)

set(PG_FLOORS "" CACHE INTERNAL "")
file(WRITE ${CMAKE_BINARY_DIR}/floors.txt "")

function(pg_floor name)
  cmake_parse_arguments(PARSE_ARGV 1 ARG "" "" "DIRS;USES")
  if(NOT ARG_DIRS)
    message(FATAL_ERROR "pg_floor(${name}): no DIRS")
  endif()
  foreach(used IN LISTS ARG_USES)
    if(NOT used IN_LIST PG_FLOORS)
      message(FATAL_ERROR "pg_floor(${name}): uses '${used}', which is not declared below it")
    endif()
    get_property(below GLOBAL PROPERTY PG_FLOOR_USES_${used})
    foreach(b IN LISTS below)
      if(NOT b IN_LIST ARG_USES)
        message(FATAL_ERROR "pg_floor(${name}): uses '${used}', which uses '${b}'; list '${b}' too")
      endif()
    endforeach()
  endforeach()
  set_property(GLOBAL PROPERTY PG_FLOOR_DIRS_${name} "${ARG_DIRS}")
  set_property(GLOBAL PROPERTY PG_FLOOR_USES_${name} "${ARG_USES}")
  set(PG_FLOORS "${PG_FLOORS};${name}" CACHE INTERNAL "")

  # The include root: a link per folder of the floor and of each floor it uses.
  set(root ${CMAKE_BINARY_DIR}/floors/${name})
  file(REMOVE_RECURSE ${root})
  foreach(f IN ITEMS ${name} ${ARG_USES})
    get_property(dirs GLOBAL PROPERTY PG_FLOOR_DIRS_${f})
    foreach(d IN LISTS dirs)
      get_filename_component(parent ${root}/${d} DIRECTORY)
      file(MAKE_DIRECTORY ${parent})
      file(CREATE_LINK ${PROJECT_SOURCE_DIR}/${d} ${root}/${d} SYMBOLIC)
    endforeach()
  endforeach()
  string(REPLACE ";" " " uses_line "${ARG_USES}")
  string(REPLACE ";" " " dirs_line "${ARG_DIRS}")
  file(APPEND ${CMAKE_BINARY_DIR}/floors.txt "${name}: ${uses_line} | ${dirs_line}\n")
endfunction()

function(pg_floor_root name out)
  set(${out} ${CMAKE_BINARY_DIR}/floors/${name} PARENT_SCOPE)
endfunction()

function(pg_floor_sources target name)
  if(NOT name IN_LIST PG_FLOORS)
    message(FATAL_ERROR "pg_floor_sources(${target}): no floor '${name}'")
  endif()
  target_include_directories(${target} PRIVATE ${CMAKE_BINARY_DIR}/floors/${name})
endfunction()
