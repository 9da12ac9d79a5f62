# Configures and builds the command line with PARCHGRAD_CUDA=SIM (the device path on the host
# SIMT runtime) for tests/python/test_device_simt.py. Run by CTest (test device_simt_build):
#   cmake -DSRC=<source> -DBIN=<build dir> -DBUILD_TYPE=Release -DNATIVE=ON [-DDEPS_PREFIX=<dir>]
#         -P build_simt_device.cmake
cmake_host_system_information(RESULT jobs QUERY NUMBER_OF_LOGICAL_CORES)
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SRC} -B ${BIN} -DCMAKE_BUILD_TYPE=${BUILD_TYPE}
                  -DPARCHGRAD_CUDA=SIM -DPARCHGRAD_NATIVE=${NATIVE} "-DPARCHGRAD_DEPS_PREFIX=${DEPS_PREFIX}"
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configuring the SIMT device build in ${BIN} failed")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BIN} --target parchgrad -j ${jobs} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building the SIMT device build in ${BIN} failed")
endif()
