# Optional CUDA kernels (GDFAST_ENABLE_CUDA=ON, or GDFAST_CUDA=1 in the environment of
# `pip install`). The same rule headers as the CPU, compiled for the device; the CPU build is
# unchanged when this is off.
if(NOT GDFAST_ENABLE_CUDA)
  return()
endif()

include(CheckLanguage)
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  message(FATAL_ERROR "GDFAST_ENABLE_CUDA=ON but no CUDA compiler was found; install the CUDA "
                      "toolkit (nvcc on PATH or CUDACXX set) or build without CUDA")
endif()
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  # Ampere and Hopper as machine code, plus PTX of the newest for later GPUs to JIT.
  set(CMAKE_CUDA_ARCHITECTURES 80-real 90-real 90-virtual)
endif()
enable_language(CUDA)
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
find_package(CUDAToolkit REQUIRED)

add_library(gdfast_cuda OBJECT csrc/cuda/kernels.cu csrc/cuda/monitored.cu csrc/cuda/reduce.cu)
target_include_directories(gdfast_cuda PRIVATE ${PROJECT_SOURCE_DIR}/csrc ${GDFAST_GENERATED_DIR})
set_target_properties(gdfast_cuda PROPERTIES POSITION_INDEPENDENT_CODE ON)
# No FMA contraction (as on the CPU): the GPU then computes bit-identical results.
target_compile_options(gdfast_cuda PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:--fmad=false -Xcompiler=-fno-math-errno>)
target_link_libraries(gdfast_cuda PRIVATE CUDA::cudart_static)
# On the bindings alone (nothing else reads it): the CPU kernels of a CUDA build then compile
# with the command lines of a CPU-only build (a compiler cache serves them: .ci/run).
target_compile_definitions(_core PRIVATE GDFAST_HAVE_CUDA)
target_link_libraries(_core PRIVATE gdfast_cuda CUDA::cudart_static)
message(STATUS "gdfast: CUDA kernels for ${CMAKE_CUDA_ARCHITECTURES}")
