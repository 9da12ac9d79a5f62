# libparchgrad: the C API (capi/include/parchgrad/parchgrad.h) as a shared library with a
# versioned soname that exports only pg_ symbols, and as one static archive; and the install
# rules of the package: the header, both libraries, parchgradConfig.cmake (target
# parchgrad::parchgrad, and parchgrad::parchgrad_static) with its version file, parchgrad.pc,
# the `parchgrad` command, and the bundled default model under share/parchgrad/.
#   cmake --install <build> --prefix P
# Included by CMakeLists.txt after the floors and the device backend.
include_guard(GLOBAL)
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# The C functions, over the capi floor (capi/saliency.h, capi/dataset.h) and everything below.
add_library(parchgrad_capi_c STATIC capi/capi.cpp)
pg_floor_sources(parchgrad_capi_c capi)
target_compile_definitions(parchgrad_capi_c PRIVATE PARCHGRAD_VERSION="${PROJECT_VERSION}")
target_link_libraries(parchgrad_capi_c PUBLIC parchgrad_floor_capi)

# libparchgrad.so.MAJOR.MINOR (before 1.0 a minor version may change the ABI): every object of
# the C functions, the engine's pulled in as they are used; the version script exports pg_*
# and hides everything else (the engine's C++ symbols, libstdc++'s inline instantiations).
add_library(parchgrad_shared SHARED $<TARGET_OBJECTS:parchgrad_capi_c>)
target_link_libraries(parchgrad_shared PRIVATE parchgrad_floor_capi)
target_link_options(parchgrad_shared PRIVATE
  "LINKER:--version-script=${PROJECT_SOURCE_DIR}/cmake/package/parchgrad.map" "LINKER:--no-undefined")
set_target_properties(parchgrad_shared PROPERTIES OUTPUT_NAME parchgrad
  VERSION ${PROJECT_VERSION} SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR}
  LINK_DEPENDS ${PROJECT_SOURCE_DIR}/cmake/package/parchgrad.map)
set_property(TARGET parchgrad_shared APPEND PROPERTY INTERFACE_INCLUDE_DIRECTORIES ${PROJECT_SOURCE_DIR}/capi/include)

# libparchgrad.a: the archives of the C functions and of every floor below, merged into one
# (GNU ar's MRI script), so that a static user links one file plus the dependencies listed in
# parchgrad.pc (Libs.private) and parchgradConfig.cmake.
set(PG_STATIC_PARTS parchgrad_capi_c parchgrad_floor_capi parchgrad_floor_parchgrad parchgrad_floor_io
    parchgrad_floor_nn parchgrad_floor_weights parchgrad_floor_autograd parchgrad_floor_kernels parchgrad_floor_core)
set(PG_STATIC_DEPS "")  # what a static user links besides libparchgrad.a (absolute paths, -l names)
if(PARCHGRAD_DEVICE_BACKEND STREQUAL "simt")
  list(APPEND PG_STATIC_PARTS parchgrad_simt)
elseif(PARCHGRAD_DEVICE_BACKEND STREQUAL "cuda")
  list(APPEND PG_STATIC_PARTS parchgrad_cuda)
  list(APPEND PG_STATIC_DEPS $<TARGET_LINKER_FILE:CUDA::cudart_static> ${PARCHGRAD_CUDNN_LIBRARY}
       ${PARCHGRAD_CUBLAS_LIBRARY} ${PARCHGRAD_CUBLASLT_LIBRARY} rt)
endif()
set(PG_MRI "CREATE ${CMAKE_BINARY_DIR}/libparchgrad.a\n")
foreach(part IN LISTS PG_STATIC_PARTS)
  string(APPEND PG_MRI "ADDLIB $<TARGET_FILE:${part}>\n")
endforeach()
string(APPEND PG_MRI "SAVE\nEND\n")
file(GENERATE OUTPUT ${CMAKE_BINARY_DIR}/libparchgrad.mri CONTENT "${PG_MRI}")
set(PG_STATIC_FILES "")
foreach(part IN LISTS PG_STATIC_PARTS)
  list(APPEND PG_STATIC_FILES $<TARGET_FILE:${part}>)
endforeach()
add_custom_command(OUTPUT ${CMAKE_BINARY_DIR}/libparchgrad.a
  COMMAND ${CMAKE_COMMAND} -E rm -f ${CMAKE_BINARY_DIR}/libparchgrad.a
  COMMAND ${CMAKE_AR} -M < ${CMAKE_BINARY_DIR}/libparchgrad.mri
  DEPENDS ${PG_STATIC_PARTS} ${PG_STATIC_FILES} ${CMAKE_BINARY_DIR}/libparchgrad.mri
  COMMENT "Merging the floors into libparchgrad.a" VERBATIM)
add_custom_target(parchgrad_static ALL DEPENDS ${CMAKE_BINARY_DIR}/libparchgrad.a)

# The static archive's dependencies, as absolute paths where CMake found them.
if(PARCHGRAD_DEPS_PREFIX)
  list(APPEND PG_STATIC_DEPS ${LIBZIP_LIB} ${LIBJPEG_LIB} ${PUGIXML_LIB})
else()
  list(APPEND PG_STATIC_DEPS ${LIBZIP_LINK_LIBRARIES} ${LIBJPEG_LINK_LIBRARIES} pugixml)
endif()
list(APPEND PG_STATIC_DEPS ${OpenMP_CXX_LIBRARIES} ${CMAKE_DL_LIBS} stdc++ m)
# For pkg-config: the same as linker arguments.
set(PG_PC_PRIVATE "")
foreach(dep IN LISTS PG_STATIC_DEPS)
  if(IS_ABSOLUTE "${dep}" OR dep MATCHES "^\\$<")
    string(APPEND PG_PC_PRIVATE " ${dep}")
  else()
    string(APPEND PG_PC_PRIVATE " -l${dep}")
  endif()
endforeach()

# The package files. parchgrad.pc finds its prefix from its own place (${pcfiledir}), and
# parchgradConfig.cmake from its own (PACKAGE_PREFIX_DIR), so the package works wherever
# `cmake --install --prefix` puts it.
set(PG_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/parchgrad)
set(PG_SONAME libparchgrad.so.${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR})
configure_package_config_file(cmake/package/parchgradConfig.cmake.in ${CMAKE_BINARY_DIR}/package/parchgradConfig.cmake.gen
  INSTALL_DESTINATION ${PG_CMAKE_DIR} PATH_VARS CMAKE_INSTALL_INCLUDEDIR CMAKE_INSTALL_LIBDIR CMAKE_INSTALL_DATADIR)
file(GENERATE OUTPUT ${CMAKE_BINARY_DIR}/package/parchgradConfig.cmake
  INPUT ${CMAKE_BINARY_DIR}/package/parchgradConfig.cmake.gen)
write_basic_package_version_file(${CMAKE_BINARY_DIR}/package/parchgradConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
file(RELATIVE_PATH PG_PC_TO_PREFIX /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
configure_file(cmake/package/parchgrad.pc.in ${CMAKE_BINARY_DIR}/package/parchgrad.pc.gen @ONLY)
file(GENERATE OUTPUT ${CMAKE_BINARY_DIR}/package/parchgrad.pc INPUT ${CMAKE_BINARY_DIR}/package/parchgrad.pc.gen)

install(TARGETS parchgrad RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS parchgrad_shared LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(FILES ${CMAKE_BINARY_DIR}/libparchgrad.a DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(FILES capi/include/parchgrad/parchgrad.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/parchgrad)
install(FILES ${CMAKE_BINARY_DIR}/package/parchgradConfig.cmake ${CMAKE_BINARY_DIR}/package/parchgradConfigVersion.cmake
  DESTINATION ${PG_CMAKE_DIR})
install(FILES ${CMAKE_BINARY_DIR}/package/parchgrad.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
install(FILES assets/default/resnet_synth.pth assets/default/stats.safetensors assets/default/classes.txt
  assets/default/README.md DESTINATION ${CMAKE_INSTALL_DATADIR}/parchgrad)
install(DIRECTORY assets/default/examples DESTINATION ${CMAKE_INSTALL_DATADIR}/parchgrad)
