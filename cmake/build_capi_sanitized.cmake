# Configures and builds tests/capi/sanitized (the engine and tests/capi/test_capi.cpp with ASan +
# UBSan and with ThreadSanitizer), a project of its own. Run by CTest (the fixture test
# capi_sanitized_build):
#   cmake -DSRC=<source> -DBIN=<build dir> [-DDEPS_PREFIX=<dir>] -P build_capi_sanitized.cmake
cmake_host_system_information(RESULT jobs QUERY NUMBER_OF_LOGICAL_CORES)
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SRC}/tests/capi/sanitized -B ${BIN} "-DPARCHGRAD_DEPS_PREFIX=${DEPS_PREFIX}"
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configuring the sanitized C API tests in ${BIN} failed (see above)")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BIN} -j ${jobs} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building the sanitized C API tests in ${BIN} failed")
endif()
