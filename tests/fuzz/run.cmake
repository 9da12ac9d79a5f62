# Runs one libFuzzer target for a fixed number of executions from its committed seed corpus
# (CTest's fuzz_<target>; tests/CMakeLists.txt passes the settings):
#   cmake -DEXE=<fuzz binary> -DCORPUS=<tests/fuzz/corpus/target> -DWORK=<scratch dir>
#         -DRUNS=N -DMAX_LEN=bytes -DRSS_MB=MB -DTIMEOUT_S=s -P run.cmake
# New inputs the fuzzer finds go to WORK/corpus (emptied first, so every run starts from the
# seeds alone and the committed corpus is never written); a crashing input is saved as
# WORK/crash-<sha1> (or leak-, timeout-, oom-) and the test fails. The seed is fixed, so a run
# is repeatable: the same sources and corpus give the same inputs. -use_value_profile guides
# the mutations by the operands of comparisons (off-by-one bounds checks are found sooner).
# With -DEXPECT_FINDING=1 (a positive control, fuzz_<target>_control) the run must instead
# stop at the planted defect within RUNS: an AddressSanitizer heap-buffer-overflow in
# planted_defect (tests/fuzz/fuzz_common.h) with its input saved; anything else fails.
foreach(v EXE CORPUS WORK RUNS MAX_LEN RSS_MB TIMEOUT_S)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "run.cmake: -D${v}=... missing")
  endif()
endforeach()
if(NOT EXISTS ${EXE})
  message(FATAL_ERROR "fuzz target ${EXE} was not built: the fixture test fuzz_build failed or did not run. "
                      "The fuzz targets need clang++ with libFuzzer and the sanitizer runtimes "
                      "(Debian 12: apt-get install clang libclang-rt-14-dev; tools/setup.sh installs both).")
endif()
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/corpus ${WORK}/tmp)
set(ENV{TMPDIR} ${WORK}/tmp)  # the targets' scratch files
set(ENV{ASAN_OPTIONS} "detect_leaks=1:abort_on_error=0:allocator_may_return_null=0")
set(ENV{UBSAN_OPTIONS} "halt_on_error=1:print_stacktrace=1")
string(TIMESTAMP t0 "%s")
set(fuzz_command ${EXE} -runs=${RUNS} -seed=1 -max_len=${MAX_LEN} -rss_limit_mb=${RSS_MB} -malloc_limit_mb=${RSS_MB}
    -timeout=${TIMEOUT_S} -use_value_profile=1 -print_final_stats=1 -artifact_prefix=${WORK}/ ${WORK}/corpus ${CORPUS})
if(EXPECT_FINDING)
  set(ENV{PG_FUZZ_SEEDS} ${CORPUS})  # the planted defect waits for an input that is none of these
  execute_process(COMMAND ${fuzz_command} RESULT_VARIABLE rc ERROR_VARIABLE log OUTPUT_VARIABLE out)
  string(TIMESTAMP t1 "%s")
  math(EXPR secs "${t1} - ${t0}")
  file(WRITE ${WORK}/log.txt "${out}${log}")
  file(GLOB artifacts ${WORK}/crash-*)
  if(rc EQUAL 0 OR NOT artifacts OR NOT log MATCHES "heap-buffer-overflow" OR NOT log MATCHES "planted_defect")
    message(FATAL_ERROR "positive control ${EXE}: the planted defect was not reported within ${RUNS} runs "
                        "(exit ${rc}, ${secs} s; log ${WORK}/log.txt): the fuzzer no longer gets that far from "
                        "the seeds, or a finding is no longer reported")
  endif()
  string(REGEX MATCH "number_of_executed_units: [0-9]+" execs "${log}")
  string(REGEX REPLACE ".*: " "" execs "${execs}")
  message(STATUS "positive control: the planted defect found at run ${execs} of ${RUNS}, ${secs} s")
  return()
endif()
execute_process(COMMAND ${fuzz_command} RESULT_VARIABLE rc)
string(TIMESTAMP t1 "%s")
math(EXPR secs "${t1} - ${t0}")
if(NOT rc EQUAL 0)
  file(GLOB artifacts ${WORK}/crash-* ${WORK}/leak-* ${WORK}/timeout-* ${WORK}/oom-* ${WORK}/slow-unit-*)
  message(FATAL_ERROR "${EXE} failed (exit ${rc}) after ${secs} s; the input: ${artifacts} "
                      "(reproduce: ${EXE} <that file>)")
endif()
message(STATUS "${RUNS} runs in ${secs} s, no crash")
