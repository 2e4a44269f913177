#include <sys/stat.h>

#include "backend.h"
#include "errors.h"

namespace ifseg_bench {
namespace {

[[maybe_unused]] void require_file(const std::string& path, const char* what) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) throw UsageError(std::string(what) + " '" + path + "' does not exist");
  if (!S_ISREG(st.st_mode)) throw UsageError(std::string(what) + " '" + path + "' is not a regular file");
}

}  // namespace

std::string compiled_backends() {
  std::string names;
#ifdef IFSEG_BENCH_HAVE_TENSORRT
  names += IFSEG_BENCH_TENSORRT_INFO;
#endif
#ifdef IFSEG_BENCH_HAVE_ONNXRUNTIME
  if (!names.empty()) names += ", ";
  names += IFSEG_BENCH_ONNXRUNTIME_INFO;
#endif
  return names.empty() ? "none" : names;
}

std::unique_ptr<Backend> open_backend(const Options& options) {
  if (!options.engine.empty()) {
#ifdef IFSEG_BENCH_HAVE_TENSORRT
    require_file(options.engine, "engine file");
    return open_tensorrt(options);
#else
    throw UsageError("this ifseg_bench was built without the TensorRT backend (compiled-in backends: " +
                     compiled_backends() +
                     "); rebuild it where TensorRT and CUDA are installed (see cpp_bench/README.md)");
#endif
  }
#ifdef IFSEG_BENCH_HAVE_ONNXRUNTIME
  require_file(options.onnx, "ONNX model");
  return open_onnxruntime(options);
#else
  throw UsageError("this ifseg_bench was built without the ONNX Runtime backend (compiled-in backends: " +
                   compiled_backends() +
                   "); rebuild it with -DONNXRUNTIME_ROOT=<onnxruntime dir> (see cpp_bench/README.md)");
#endif
}

}  // namespace ifseg_bench
