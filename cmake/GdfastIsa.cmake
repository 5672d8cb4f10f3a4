# One OBJECT library per instruction-set level, each compiling csrc/cpu/kernels/kernels.cpp
# with that level's flags and namespace. Flags go on these libraries only: never a global
# -march, never -march=native, so one binary runs on every CPU of the architecture.

set(GDFAST_ISAS "")

# gdfast_add_isa(<name> <lane header> [flags...])
function(gdfast_add_isa name header)
  if(GDFAST_ISA_LEVELS AND NOT name IN_LIST GDFAST_ISA_LEVELS)
    return()  # (a development or CI build that needs fewer levels: GDFAST_ISA_LEVELS)
  endif()
  set(target gdfast_isa_${name})
  add_library(${target} OBJECT ${PROJECT_SOURCE_DIR}/csrc/cpu/kernels/kernels.cpp)
  target_link_libraries(${target} PRIVATE gdfast_config)
  target_compile_definitions(${target} PRIVATE GDFAST_ISA_NAMESPACE=${name}
                                               GDFAST_ISA_HEADER="cpu/simd/${header}")
  target_compile_options(${target} PRIVATE ${ARGN})
  set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE ON)
  target_compile_definitions(gdfast_config INTERFACE GDFAST_HAVE_ISA_${name})
  set(GDFAST_ISAS ${GDFAST_ISAS} ${name} PARENT_SCOPE)
endfunction()

# The architecture the code is compiled for, which is not always CMAKE_SYSTEM_PROCESSOR (the
# host's): on macOS cross builds name it in CMAKE_OSX_ARCHITECTURES (scikit-build-core sets
# that from ARCHFLAGS, as cibuildwheel does to build x86_64 on arm64), and MSVC reports it
# as its compiler architecture (x64, ARM64, X86).
set(_gdfast_cpu "${CMAKE_SYSTEM_PROCESSOR}")
if(APPLE AND CMAKE_OSX_ARCHITECTURES)
  list(LENGTH CMAKE_OSX_ARCHITECTURES _gdfast_n_archs)
  if(_gdfast_n_archs EQUAL 1)
    set(_gdfast_cpu "${CMAKE_OSX_ARCHITECTURES}")
  else()
    # One compiler call builds every slice, so no slice can get its own SIMD flags/headers.
    message(WARNING "gdfast: building for several architectures at once "
                    "(${CMAKE_OSX_ARCHITECTURES}, e.g. universal2): scalar kernels only. "
                    "Build one wheel per architecture (ARCHFLAGS=\"-arch arm64\") for SIMD.")
    set(_gdfast_cpu "multiple")
  endif()
elseif(MSVC AND CMAKE_CXX_COMPILER_ARCHITECTURE_ID)
  set(_gdfast_cpu "${CMAKE_CXX_COMPILER_ARCHITECTURE_ID}")
endif()
string(TOLOWER "${_gdfast_cpu}" _gdfast_cpu)
if(MSVC)
  set(_gdfast_scalar_flags "")
else()
  # The scalar level is the one-lane reference: keep the compiler from vectorizing it.
  set(_gdfast_scalar_flags -fno-tree-vectorize)
  if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    set(_gdfast_scalar_flags -fno-vectorize -fno-slp-vectorize)
  endif()
endif()
gdfast_add_isa(scalar vec_scalar.h ${_gdfast_scalar_flags})

if(_gdfast_cpu MATCHES "^(x86_64|amd64|x64)$")
  if(MSVC)
    set(_gdfast_v3_flags /arch:AVX2)
    set(_gdfast_v4_flags /arch:AVX512)
  else()
    # x86-64-v3 and -v4 spelled out, for compilers that predate the level names.
    set(_gdfast_v3_flags -mavx2 -mfma -mbmi -mbmi2 -mf16c -mlzcnt -mmovbe)
    set(_gdfast_v4_flags ${_gdfast_v3_flags} -mavx512f -mavx512bw -mavx512dq -mavx512vl
                         -mavx512cd)
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
      # GCC's own _mm512_sqrt_ps, _mm512_srli_epi32, _mm512_cvtepi32_epi16... pass
      # _mm512_undefined_*() and then warn about it.
      list(APPEND _gdfast_v4_flags -Wno-maybe-uninitialized -Wno-uninitialized)
    endif()
  endif()
  gdfast_add_isa(baseline vec_sse2.h)
  gdfast_add_isa(avx2 vec_avx2.h ${_gdfast_v3_flags})
  gdfast_add_isa(avx512 vec_avx512.h ${_gdfast_v4_flags})
elseif(_gdfast_cpu MATCHES "^(aarch64|arm64)$")
  gdfast_add_isa(neon vec_neon.h)
else()
  message(STATUS "gdfast: no SIMD kernels for '${_gdfast_cpu}'; scalar level only")
endif()
if(NOT GDFAST_ISAS)
  message(FATAL_ERROR "GDFAST_ISA_LEVELS='${GDFAST_ISA_LEVELS}' names no CPU kernel level of "
                      "${_gdfast_cpu}")
endif()
message(STATUS "gdfast: CPU kernel levels for ${_gdfast_cpu}: ${GDFAST_ISAS}")
