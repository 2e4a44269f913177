// The interface every inference backend implements, and the factory that picks one.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "build_config.h"
#include "options.h"
#include "tensor.h"

namespace ifseg_bench {

/// Times of one inference in milliseconds; a negative value means "not measured by this backend".
struct Sample {
  double latency_ms = -1.0;  ///< host wall clock of the whole inference, inputs in / outputs out
  double compute_ms = -1.0;  ///< GPU time of the network alone (CUDA events)
  double h2d_ms = -1.0;      ///< GPU time of the input copies
  double d2h_ms = -1.0;      ///< GPU time of the output copies
  double enqueue_ms = -1.0;  ///< host time to enqueue the network
};

class Backend {
 public:
  virtual ~Backend() = default;
  /// e.g. "TensorRT 10.3.0" or "ONNX Runtime 1.17.1 (CPUExecutionProvider)".
  virtual std::string description() const = 0;
  /// e.g. "CPU" or "NVIDIA Orin (CUDA device 0)".
  virtual std::string device() const = 0;
  /// Inputs as declared by the model (-1 for dynamic dimensions).
  virtual const std::vector<TensorDesc>& inputs() const = 0;
  /// Shape used for a dynamic input the user gave no shape for, if the model defines one.
  virtual std::optional<Dims> default_shape(const TensorDesc& input) const = 0;
  /// Throws UsageError when the model cannot take `dims` for `input` (beyond rank and static dims).
  virtual void check_shape(const TensorDesc& input, const Dims& dims) const = 0;
  /// Allocates and fills inputs for `shapes` (one entry per input); returns the outputs with their shapes.
  virtual std::vector<TensorDesc> prepare(const ShapeMap& shapes, uint64_t seed) = 0;
  /// One inference on the prepared inputs.
  virtual Sample run() = 0;
};

/// Names of the backends compiled into this binary, e.g. "TensorRT 10.3.0, ONNX Runtime (C API 17)", or "none".
std::string compiled_backends();

/// Opens the model named by --onnx / --engine with the matching backend (UsageError if not compiled in).
std::unique_ptr<Backend> open_backend(const Options& options);

#ifdef IFSEG_BENCH_HAVE_TENSORRT
std::unique_ptr<Backend> open_tensorrt(const Options& options);
#endif
#ifdef IFSEG_BENCH_HAVE_ONNXRUNTIME
std::unique_ptr<Backend> open_onnxruntime(const Options& options);
#endif

}  // namespace ifseg_bench
