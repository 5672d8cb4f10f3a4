# gdfast.cython_api: the module Cython extensions cimport gdfast's steps from (its declarations:
# gdfast/cython_api.pxd). It forwards to _core's C API table, so it holds no kernels.
set(_gdfast_pyx ${PROJECT_SOURCE_DIR}/gdfast/cython_api.pyx)
set(_gdfast_pyx_cpp ${PROJECT_BINARY_DIR}/cython_api.cpp)
add_custom_command(
  OUTPUT ${_gdfast_pyx_cpp}
  COMMAND Python::Interpreter -m cython --cplus ${_gdfast_pyx} --output-file ${_gdfast_pyx_cpp}
  DEPENDS ${_gdfast_pyx} ${PROJECT_SOURCE_DIR}/gdfast/cython_api.pxd
          ${PROJECT_SOURCE_DIR}/gdfast/include/gdfast/capi.h
  COMMENT "Cythonizing gdfast/cython_api.pyx"
  VERBATIM)
python_add_library(cython_api MODULE WITH_SOABI ${_gdfast_pyx_cpp})
target_include_directories(cython_api PRIVATE ${PROJECT_SOURCE_DIR}/gdfast/include)
install(TARGETS cython_api LIBRARY DESTINATION gdfast)
