# Configures and builds the libFuzzer targets of tests/fuzz with clang++ (ASan + UBSan +
# libFuzzer), a project of its own since the engine may be built with another compiler. Run
# by CTest (the fixture test fuzz_build):
#   cmake -DSRC=<source> -DBIN=<build dir> [-DDEPS_PREFIX=<dir>] -P build_fuzz.cmake
# Without clang++ this fails with what to install: the fuzz tests then fail too, none is
# skipped.
find_program(PG_CLANGXX NAMES clang++ clang++-14)
find_program(PG_CLANG NAMES clang clang-14)
if(NOT PG_CLANGXX OR NOT PG_CLANG)
  message(FATAL_ERROR "the fuzz tests need clang and clang++ with libFuzzer, which are not installed "
                      "(Debian 12: apt-get install clang libclang-rt-14-dev; tools/setup.sh installs both)")
endif()
cmake_host_system_information(RESULT jobs QUERY NUMBER_OF_LOGICAL_CORES)
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SRC}/tests/fuzz -B ${BIN} -DCMAKE_BUILD_TYPE=RelWithDebInfo
                  -DCMAKE_CXX_COMPILER=${PG_CLANGXX} -DCMAKE_C_COMPILER=${PG_CLANG}
                  "-DPARCHGRAD_DEPS_PREFIX=${DEPS_PREFIX}"
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configuring the fuzz targets in ${BIN} failed (see above)")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BIN} -j ${jobs} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building the fuzz targets in ${BIN} failed")
endif()
