# The CUDA backend (kernels/cuda): the nvcc build and the host-mode test helper.
#
# PARCHGRAD_CUDA = ON | OFF | AUTO (default AUTO: ON when nvcc is found, looked up on PATH,
# in $CUDA_HOME/bin and in /usr/local/cuda/bin). When on:
#   * enable_language(CUDA) with CMAKE_CUDA_ARCHITECTURES "90-real;90-virtual" (sm_90 SASS
#     plus compute_90 PTX that the driver can JIT for later GPUs), unless already set;
#   * the static library parchgrad_cuda from kernels/cuda/*.cu;
#   * the cuDNN and cuBLAS headers and libraries are looked up (toolkit, then a Python
#     nvidia-cudnn-cu*/nvidia-cublas-cu* wheel install) and reported; the device backend
#     links them (pg_add_device_backend, below). Variables: PARCHGRAD_CUDNN_INCLUDE_DIR, PARCHGRAD_CUDNN_LIBRARY,
#     PARCHGRAD_CUBLAS_INCLUDE_DIR, PARCHGRAD_CUBLAS_LIBRARY, PARCHGRAD_CUBLASLT_LIBRARY
#     (each -NOTFOUND when absent).
# Result: PARCHGRAD_CUDA_ENABLED (TRUE/FALSE), PARCHGRAD_NVCC (path or empty).
# With PARCHGRAD_CUDA=OFF, or AUTO without nvcc, this file changes nothing in the build.
#
# pg_add_cuda_host_objects(<target>) (always defined) adds kernels/cuda/*.cu to <target>
# compiled as host C++ against the SIMT runtime (cmake/simt.cmake's wrapper method).
#
# pg_add_device_backend(<target>) gives the engine library its device backend
# (PARCHGRAD_DEVICE_BACKEND = cuda | simt | none): nn/gpu/ops.cpp and a runtime, or nn/no_device.cpp
# when there is one:
#   cuda  (nvcc found, PARCHGRAD_CUDA ON/AUTO): nn/gpu/ops.cpp + nn/gpu/runtime_cuda.cpp,
#         linked with parchgrad_cuda, the CUDA runtime, cuDNN and cuBLAS (all required);
#   simt  (PARCHGRAD_CUDA=SIM): nn/gpu/ops.cpp + nn/gpu/runtime_simt.cpp and kernels/cuda/*.cu
#         compiled for the host SIMT runtime: the whole device path runs on the CPU (CI);
#   none  (OFF, or AUTO without nvcc): nothing is added; --device cuda is refused.
include_guard(GLOBAL)
include(${CMAKE_CURRENT_LIST_DIR}/simt.cmake)

set(PARCHGRAD_CUDA AUTO CACHE STRING "Build the CUDA backend: ON, OFF, AUTO (on when nvcc is found) or SIM (the device path on the host SIMT runtime)")
set_property(CACHE PARCHGRAD_CUDA PROPERTY STRINGS ON OFF AUTO SIM)

file(GLOB PARCHGRAD_CUDA_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/../kernels/cuda/*.cu)

function(pg_add_cuda_host_objects target)
  pg_add_simt_cuda_sources(${target} FILES ${PARCHGRAD_CUDA_SOURCES})
endfunction()

set(PARCHGRAD_CUDA_ENABLED FALSE)
set(PARCHGRAD_NVCC "")
if(NOT PARCHGRAD_CUDA STREQUAL "OFF" AND NOT PARCHGRAD_CUDA STREQUAL "SIM")
  if(CMAKE_CUDA_COMPILER)
    set(_pg_nvcc "${CMAKE_CUDA_COMPILER}")
  else()
    find_program(_pg_nvcc NAMES nvcc HINTS ENV CUDA_HOME PATH_SUFFIXES bin PATHS /usr/local/cuda/bin)
  endif()
  if(_pg_nvcc)
    set(PARCHGRAD_NVCC "${_pg_nvcc}")
  elseif(PARCHGRAD_CUDA STREQUAL "ON")
    message(FATAL_ERROR "PARCHGRAD_CUDA=ON but nvcc was not found (set CMAKE_CUDA_COMPILER or CUDA_HOME)")
  endif()
endif()

if(PARCHGRAD_NVCC)
  set(PARCHGRAD_CUDA_ENABLED TRUE)
  if(NOT CMAKE_CUDA_COMPILER)
    set(CMAKE_CUDA_COMPILER "${PARCHGRAD_NVCC}")
  endif()
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES "90-real;90-virtual")
  endif()
  enable_language(CUDA)
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  find_package(CUDAToolkit REQUIRED)

  add_library(parchgrad_cuda STATIC ${PARCHGRAD_CUDA_SOURCES})
  # The directory's options (-Wall, -march=native, sanitizers) are for the host compiler;
  # nvcc rejects most of them, so this target gets its own.
  set_property(TARGET parchgrad_cuda PROPERTY COMPILE_OPTIONS "")
  target_compile_options(parchgrad_cuda PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra,-Wno-unused-parameter>
    $<$<COMPILE_LANGUAGE:CUDA>:-lineinfo>)
  # The kernels floor's include root (cmake/floors.cmake): kernels/ and core/ only.
  pg_floor_sources(parchgrad_cuda kernels)
  target_link_libraries(parchgrad_cuda PUBLIC CUDA::cudart_static)

  # cuDNN and cuBLAS: the toolkit first, then a pip-installed nvidia-* wheel.
  set(_pg_py_nvidia "")
  find_program(_pg_python NAMES python3)
  if(_pg_python)
    execute_process(COMMAND ${_pg_python} -c "import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0] + '/x'))"
      OUTPUT_VARIABLE _pg_py_nvidia OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  endif()
  set(_pg_hints ${CUDAToolkit_LIBRARY_ROOT} ${CUDAToolkit_TARGET_DIR})
  if(_pg_py_nvidia)
    list(APPEND _pg_hints ${_pg_py_nvidia}/cudnn ${_pg_py_nvidia}/cublas ${_pg_py_nvidia}/cu13 ${_pg_py_nvidia}/cu12)
  endif()
  find_path(PARCHGRAD_CUDNN_INCLUDE_DIR cudnn.h HINTS ${CUDAToolkit_INCLUDE_DIRS} ${_pg_hints} PATH_SUFFIXES include)
  find_library(PARCHGRAD_CUDNN_LIBRARY NAMES cudnn libcudnn.so.9
    HINTS ${CUDAToolkit_LIBRARY_DIR} ${_pg_hints} PATH_SUFFIXES lib lib64)
  find_path(PARCHGRAD_CUBLAS_INCLUDE_DIR cublas_v2.h HINTS ${CUDAToolkit_INCLUDE_DIRS} ${_pg_hints} PATH_SUFFIXES include)
  find_library(PARCHGRAD_CUBLAS_LIBRARY NAMES cublas HINTS ${CUDAToolkit_LIBRARY_DIR} ${_pg_hints} PATH_SUFFIXES lib lib64)
  find_library(PARCHGRAD_CUBLASLT_LIBRARY NAMES cublasLt HINTS ${CUDAToolkit_LIBRARY_DIR} ${_pg_hints} PATH_SUFFIXES lib lib64)
  message(STATUS "parchgrad CUDA backend: nvcc ${CMAKE_CUDA_COMPILER_VERSION} (${PARCHGRAD_NVCC}), architectures ${CMAKE_CUDA_ARCHITECTURES}")
  message(STATUS "  cuDNN:  ${PARCHGRAD_CUDNN_INCLUDE_DIR} ${PARCHGRAD_CUDNN_LIBRARY}")
  message(STATUS "  cuBLAS: ${PARCHGRAD_CUBLAS_INCLUDE_DIR} ${PARCHGRAD_CUBLAS_LIBRARY} ${PARCHGRAD_CUBLASLT_LIBRARY}")
else()
  message(STATUS "parchgrad CUDA backend: off (PARCHGRAD_CUDA=${PARCHGRAD_CUDA}, nvcc not used)")
endif()

set(PARCHGRAD_DEVICE_BACKEND none)
if(PARCHGRAD_CUDA STREQUAL "SIM")
  set(PARCHGRAD_DEVICE_BACKEND simt)
elseif(PARCHGRAD_CUDA_ENABLED)
  if(NOT PARCHGRAD_CUDNN_INCLUDE_DIR OR NOT PARCHGRAD_CUDNN_LIBRARY OR NOT PARCHGRAD_CUBLAS_LIBRARY)
    message(FATAL_ERROR "The CUDA backend needs cuDNN and cuBLAS (found: cuDNN '${PARCHGRAD_CUDNN_INCLUDE_DIR}' "
      "'${PARCHGRAD_CUDNN_LIBRARY}', cuBLAS '${PARCHGRAD_CUBLAS_LIBRARY}'); install them or configure with "
      "-DPARCHGRAD_CUDA=OFF")
  endif()
  set(PARCHGRAD_DEVICE_BACKEND cuda)
endif()
message(STATUS "parchgrad device backend: ${PARCHGRAD_DEVICE_BACKEND}")

function(pg_add_device_backend target)
  if(PARCHGRAD_DEVICE_BACKEND STREQUAL "none")
    target_sources(${target} PRIVATE ${PROJECT_SOURCE_DIR}/nn/no_device.cpp)
    return()
  endif()
  target_sources(${target} PRIVATE ${PROJECT_SOURCE_DIR}/nn/gpu/ops.cpp)
  if(PARCHGRAD_DEVICE_BACKEND STREQUAL "simt")
    target_sources(${target} PRIVATE ${PROJECT_SOURCE_DIR}/nn/gpu/runtime_simt.cpp)
    target_link_libraries(${target} PUBLIC parchgrad_simt)
    pg_add_cuda_host_objects(${target})
  else()
    target_sources(${target} PRIVATE ${PROJECT_SOURCE_DIR}/nn/gpu/runtime_cuda.cpp)
    target_include_directories(${target} SYSTEM PRIVATE ${PARCHGRAD_CUDNN_INCLUDE_DIR} ${PARCHGRAD_CUBLAS_INCLUDE_DIR})
    target_link_libraries(${target} PUBLIC parchgrad_cuda CUDA::cudart_static ${PARCHGRAD_CUDNN_LIBRARY}
      ${PARCHGRAD_CUBLAS_LIBRARY})
    if(PARCHGRAD_CUBLASLT_LIBRARY)
      target_link_libraries(${target} PUBLIC ${PARCHGRAD_CUBLASLT_LIBRARY})
    endif()
  endif()
endfunction()
