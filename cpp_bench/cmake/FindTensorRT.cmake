# Finds the TensorRT runtime headers and libraries (desktop tarball / Debian packages / JetPack).
#
# Hints (CMake or environment variables):
#   TENSORRT_ROOT  a TensorRT folder (include/, lib/), e.g. the unpacked tarball; JetPack and NVIDIA's
#                  Debian packages install to /usr/include/<arch> and /usr/lib/<arch>, searched by default
# Defines TensorRT_FOUND, TensorRT_VERSION and the imported targets TensorRT::nvinfer and, when found,
# TensorRT::nvinfer_plugin.

set(_trt_hints ${TENSORRT_ROOT} $ENV{TENSORRT_ROOT})

find_path(TENSORRT_INCLUDE_DIR NvInfer.h
  HINTS ${_trt_hints}
  PATH_SUFFIXES include include/${CMAKE_LIBRARY_ARCHITECTURE})
find_library(TENSORRT_LIBRARY
  NAMES nvinfer nvinfer_10
  HINTS ${_trt_hints}
  PATH_SUFFIXES lib lib64 lib/${CMAKE_LIBRARY_ARCHITECTURE})
find_library(TENSORRT_PLUGIN_LIBRARY
  NAMES nvinfer_plugin nvinfer_plugin_10
  HINTS ${_trt_hints}
  PATH_SUFFIXES lib lib64 lib/${CMAKE_LIBRARY_ARCHITECTURE})

# NvInferVersion.h: "#define NV_TENSORRT_MAJOR 8" (8.x) or "#define TRT_MAJOR_ENTERPRISE 10" (10.x and later).
if(TENSORRT_INCLUDE_DIR AND EXISTS "${TENSORRT_INCLUDE_DIR}/NvInferVersion.h")
  file(READ "${TENSORRT_INCLUDE_DIR}/NvInferVersion.h" _trt_version_h)
  foreach(_part MAJOR MINOR PATCH)
    string(REGEX MATCH "#define (NV_TENSORRT_${_part}|TRT_${_part}_ENTERPRISE) +([0-9]+)" _m "${_trt_version_h}")
    set(_trt_${_part} "${CMAKE_MATCH_2}")
  endforeach()
  if(NOT _trt_MAJOR STREQUAL "" AND NOT _trt_MINOR STREQUAL "" AND NOT _trt_PATCH STREQUAL "")
    set(TensorRT_VERSION "${_trt_MAJOR}.${_trt_MINOR}.${_trt_PATCH}")
  endif()
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(TensorRT
  REQUIRED_VARS TENSORRT_LIBRARY TENSORRT_INCLUDE_DIR TensorRT_VERSION
  VERSION_VAR TensorRT_VERSION)

if(TensorRT_FOUND AND NOT TARGET TensorRT::nvinfer)
  add_library(TensorRT::nvinfer UNKNOWN IMPORTED)
  set_target_properties(TensorRT::nvinfer PROPERTIES
    IMPORTED_LOCATION "${TENSORRT_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${TENSORRT_INCLUDE_DIR}")
  if(TENSORRT_PLUGIN_LIBRARY)
    add_library(TensorRT::nvinfer_plugin UNKNOWN IMPORTED)
    set_target_properties(TensorRT::nvinfer_plugin PROPERTIES
      IMPORTED_LOCATION "${TENSORRT_PLUGIN_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${TENSORRT_INCLUDE_DIR}")
  endif()
endif()
mark_as_advanced(TENSORRT_INCLUDE_DIR TENSORRT_LIBRARY TENSORRT_PLUGIN_LIBRARY)
