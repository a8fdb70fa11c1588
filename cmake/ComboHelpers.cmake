# Shared target settings: warnings, precompiled LibTorch headers.
include(GNUInstallDirs)

# Sources of an area are every .cpp under src/<area>; new files need no CMake edit.
function(combo_collect_sources out)
  set(files "")
  foreach(area ${ARGN})
    file(GLOB_RECURSE area_files CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/src/${area}/*.cpp")
    list(APPEND files ${area_files})
  endforeach()
  if(NOT files)
    # An area with no sources yet still makes a valid (empty) library.
    set(files "${PROJECT_SOURCE_DIR}/cmake/empty.cpp")
  endif()
  set(${out} ${files} PARENT_SCOPE)
endfunction()

# One precompiled header for all libraries and one for all executables (-fPIC vs -fPIE), each
# built once and reused.
set(COMBO_PCH_LIB_TARGET "" CACHE INTERNAL "")
set(COMBO_PCH_EXE_TARGET "" CACHE INTERNAL "")
function(combo_target_defaults target)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter)
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_GREATER_EQUAL 13)
      # GCC 13 at -O3 reports a false -Warray-bounds in libstdc++'s vector<bool>::reserve as
      # inlined into LibTorch 2.x's torch::autograd::Function::apply (seen for our deformable
      # attention and consistency-loss functions on the H200 machine's GCC 13.3).
      target_compile_options(${target} PRIVATE -Wno-array-bounds)
    endif()
    if(COMBO_WARNINGS_AS_ERRORS)
      target_compile_options(${target} PRIVATE -Werror)
    endif()
  endif()
  target_compile_features(${target} PUBLIC cxx_std_17)
  if(COMBO_USE_PCH)
    get_target_property(type ${target} TYPE)
    if(type STREQUAL "EXECUTABLE")
      set(var COMBO_PCH_EXE_TARGET)
    else()
      set(var COMBO_PCH_LIB_TARGET)
    endif()
    if(NOT ${var})
      target_precompile_headers(${target} PRIVATE <torch/torch.h>)
      set(${var} ${target} CACHE INTERNAL "")
    else()
      target_precompile_headers(${target} REUSE_FROM ${${var}})
    endif()
  endif()
endfunction()
