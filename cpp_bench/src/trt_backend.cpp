// TensorRT backend (8.5+): deserializes an engine, binds named I/O tensors and times enqueueV3 with CUDA events.
#include "build_config.h"

#include <NvInfer.h>
#ifdef IFSEG_BENCH_HAVE_TENSORRT_PLUGINS
#include <NvInferPlugin.h>
#endif
#include <cuda_runtime_api.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <type_traits>

#include "backend.h"
#include "errors.h"

namespace ifseg_bench {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw RuntimeFailure(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(status));
  }
}

/// Prints TensorRT warnings (everything with --verbose) and keeps the last error for our one-line message.
class Logger final : public nvinfer1::ILogger {
 public:
  explicit Logger(bool verbose) : verbose_(verbose) {}

  void log(Severity severity, const char* message) noexcept override {
    if (severity <= Severity::kERROR) {
      try {
        last_error_ = message;
      } catch (...) {
      }
    }
    if (verbose_ || severity == Severity::kWARNING) {
      const char* tag = severity <= Severity::kERROR ? "E" : severity == Severity::kWARNING ? "W" : "I";
      std::fprintf(stderr, "[%s] [TRT] %s\n", tag, message);
    }
  }

  std::string last_error() const { return last_error_.empty() ? "no TensorRT error message" : last_error_; }

 private:
  bool verbose_;
  std::string last_error_;
};

DataType to_dtype(nvinfer1::DataType type, const std::string& name) {
  switch (type) {
    case nvinfer1::DataType::kFLOAT: return DataType::kFloat32;
    case nvinfer1::DataType::kHALF: return DataType::kFloat16;
    case nvinfer1::DataType::kINT8: return DataType::kInt8;
    case nvinfer1::DataType::kUINT8: return DataType::kUInt8;
    case nvinfer1::DataType::kINT32: return DataType::kInt32;
    case nvinfer1::DataType::kBOOL: return DataType::kBool;
#if NV_TENSORRT_MAJOR >= 9
    case nvinfer1::DataType::kBF16: return DataType::kBFloat16;
#endif
#if NV_TENSORRT_MAJOR >= 10
    case nvinfer1::DataType::kINT64: return DataType::kInt64;
#endif
    default:
      throw UsageError("engine tensor '" + name + "' has a TensorRT data type (" +
                       std::to_string(static_cast<int>(type)) + ") that ifseg_bench does not support");
  }
}

Dims from_trt(const nvinfer1::Dims& d) {
  Dims dims;
  for (int32_t i = 0; i < d.nbDims; ++i) dims.push_back(d.d[i] < 0 ? -1 : static_cast<int64_t>(d.d[i]));
  return dims;
}

nvinfer1::Dims to_trt(const Dims& dims) {
  nvinfer1::Dims d{};
  d.nbDims = static_cast<int32_t>(dims.size());
  using Dim = std::remove_reference_t<decltype(d.d[0])>;  // int32_t before TensorRT 10, int64_t from 10 on
  for (std::size_t i = 0; i < dims.size(); ++i) d.d[i] = static_cast<Dim>(dims[i]);
  return d;
}

std::string version_text(int32_t code) {
  // 8.x encodes MAJOR*1000 + MINOR*100 + PATCH; 10.x and later MAJOR*10000 + MINOR*100 + PATCH.
  const int32_t major = code >= 100000 ? code / 10000 : code / 1000;
  const int32_t minor = code >= 100000 ? code / 100 % 100 : code / 100 % 10;
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(code % 100);
}

std::vector<char> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof()) throw UsageError("cannot read engine file '" + path + "'");
  if (data.empty()) throw UsageError("engine file '" + path + "' is empty");
  return data;
}

/// Device and pinned host buffers of one I/O tensor.
struct Binding {
  std::string name;
  std::size_t bytes = 0;
  void* device = nullptr;
  void* host = nullptr;
};

class TrtBackend final : public Backend {
 public:
  explicit TrtBackend(const Options& options)
      : logger_(options.verbose), transfers_(options.transfers) {
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess || count == 0) {
      throw RuntimeFailure(std::string("no usable CUDA GPU for the TensorRT backend: ") +
                           (status != cudaSuccess ? cudaGetErrorString(status) : "no CUDA device found"));
    }
    if (options.device >= count) {
      throw UsageError("--device=" + std::to_string(options.device) + " but this machine has " + std::to_string(count) +
                       " CUDA device(s)");
    }
    check_cuda(cudaSetDevice(options.device), "cudaSetDevice");
    cudaDeviceProp prop{};
    check_cuda(cudaGetDeviceProperties(&prop, options.device), "cudaGetDeviceProperties");
    device_ = std::string(prop.name) + " (CUDA device " + std::to_string(options.device) + ", compute capability " +
              std::to_string(prop.major) + "." + std::to_string(prop.minor) + ")";
#ifdef IFSEG_BENCH_HAVE_TENSORRT_PLUGINS
    initLibNvInferPlugins(&logger_, "");
#endif
    const std::vector<char> blob = read_file(options.engine);
    runtime_.reset(nvinfer1::createInferRuntime(logger_));
    if (!runtime_) throw RuntimeFailure("cannot create the TensorRT runtime: " + logger_.last_error());
    engine_.reset(runtime_->deserializeCudaEngine(blob.data(), blob.size()));
    if (!engine_) {
      throw UsageError("cannot load TensorRT engine '" + options.engine +
                       "' (engines only run on the TensorRT version and GPU they were built for; rebuild it here): " +
                       logger_.last_error());
    }
    context_.reset(engine_->createExecutionContext());
    if (!context_) throw RuntimeFailure("cannot create a TensorRT execution context: " + logger_.last_error());
    for (int32_t i = 0; i < engine_->getNbIOTensors(); ++i) {
      const char* name = engine_->getIOTensorName(i);
      if (engine_->isShapeInferenceIO(name)) {
        throw UsageError("engine tensor '" + std::string(name) +
                         "' is a shape tensor, which ifseg_bench does not support");
      }
      TensorDesc desc{name, to_dtype(engine_->getTensorDataType(name), name), from_trt(engine_->getTensorShape(name))};
      (engine_->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT ? inputs_ : outputs_).push_back(desc);
    }
    check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    for (cudaEvent_t& event : events_) check_cuda(cudaEventCreate(&event), "cudaEventCreate");
  }

  ~TrtBackend() override {
    for (Binding& b : bindings_) {
      cudaFree(b.device);
      cudaFreeHost(b.host);
    }
    for (cudaEvent_t event : events_) {
      if (event) cudaEventDestroy(event);
    }
    if (stream_) cudaStreamDestroy(stream_);
  }

  std::string description() const override {
    return "TensorRT " + version_text(getInferLibVersion()) + " (built against " + std::to_string(NV_TENSORRT_MAJOR) +
           "." + std::to_string(NV_TENSORRT_MINOR) + "." + std::to_string(NV_TENSORRT_PATCH) + ")" +
           (transfers_ ? "" : ", no H2D/D2H transfers");
  }

  std::string device() const override { return device_; }

  const std::vector<TensorDesc>& inputs() const override { return inputs_; }

  std::optional<Dims> default_shape(const TensorDesc& input) const override {
    const Dims opt = from_trt(engine_->getProfileShape(input.name.c_str(), 0, nvinfer1::OptProfileSelector::kOPT));
    if (opt.size() != input.dims.size() || !is_concrete(opt)) return std::nullopt;
    return opt;
  }

  void check_shape(const TensorDesc& input, const Dims& dims) const override {
    if (is_concrete(input.dims)) return;
    const char* name = input.name.c_str();
    const Dims lo = from_trt(engine_->getProfileShape(name, 0, nvinfer1::OptProfileSelector::kMIN));
    const Dims hi = from_trt(engine_->getProfileShape(name, 0, nvinfer1::OptProfileSelector::kMAX));
    if (lo.size() != dims.size() || hi.size() != dims.size()) return;
    for (std::size_t i = 0; i < dims.size(); ++i) {
      if (dims[i] < lo[i] || dims[i] > hi[i]) {
        throw UsageError("--shapes gives input '" + input.name + "' " + format_dims(dims) +
                         ", outside the engine's optimization profile 0 (min " + format_dims(lo) + ", max " +
                         format_dims(hi) + "); choose shapes inside it or rebuild the engine");
      }
    }
  }

  std::vector<TensorDesc> prepare(const ShapeMap& shapes, uint64_t seed) override {
    for (const TensorDesc& t : inputs_) {
      if (!context_->setInputShape(t.name.c_str(), to_trt(shapes.at(t.name)))) {
        throw UsageError("TensorRT rejects shape " + format_dims(shapes.at(t.name)) + " for input '" + t.name +
                         "': " + logger_.last_error());
      }
    }
    if (context_->inferShapes(0, nullptr) != 0) {
      throw UsageError("TensorRT cannot infer the output shapes from these input shapes: " + logger_.last_error());
    }
    std::vector<TensorDesc> outputs;
    for (std::size_t i = 0; i < inputs_.size(); ++i) {
      TensorDesc t = inputs_[i];
      t.dims = shapes.at(t.name);
      Binding& b = bind(t);
      fill_random(b.host, t.dtype, static_cast<std::size_t>(volume(t.dims)), seed + 0x1000193ull * i);
      check_cuda(cudaMemcpy(b.device, b.host, b.bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
    }
    inputs_bound_ = bindings_.size();
    for (TensorDesc t : outputs_) {
      t.dims = from_trt(context_->getTensorShape(t.name.c_str()));
      if (!is_concrete(t.dims)) {
        throw UsageError("output '" + t.name + "' has a data-dependent shape, which ifseg_bench does not support");
      }
      bind(t);
      outputs.push_back(t);
    }
    return outputs;
  }

  Sample run() override {
    Sample sample;
    const Clock::time_point start = Clock::now();
    check_cuda(cudaEventRecord(events_[0], stream_), "cudaEventRecord");
    if (transfers_) copy(0, inputs_bound_, cudaMemcpyHostToDevice);
    check_cuda(cudaEventRecord(events_[1], stream_), "cudaEventRecord");
    const Clock::time_point enqueue = Clock::now();
    if (!context_->enqueueV3(stream_)) throw RuntimeFailure("TensorRT enqueueV3 failed: " + logger_.last_error());
    sample.enqueue_ms = ms_since(enqueue);
    check_cuda(cudaEventRecord(events_[2], stream_), "cudaEventRecord");
    if (transfers_) copy(inputs_bound_, bindings_.size(), cudaMemcpyDeviceToHost);
    check_cuda(cudaEventRecord(events_[3], stream_), "cudaEventRecord");
    check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    sample.latency_ms = ms_since(start);
    sample.compute_ms = elapsed(1, 2);
    if (transfers_) {
      sample.h2d_ms = elapsed(0, 1);
      sample.d2h_ms = elapsed(2, 3);
    }
    return sample;
  }

 private:
  /// Allocates device and pinned host memory for `t` and gives the device address to the context.
  Binding& bind(const TensorDesc& t) {
    Binding b;
    b.name = t.name;
    b.bytes = static_cast<std::size_t>(volume(t.dims)) * dtype_size(t.dtype);
    const std::size_t alloc = b.bytes ? b.bytes : 1;
    check_cuda(cudaMalloc(&b.device, alloc), "cudaMalloc");
    bindings_.push_back(b);  // owned from here on, freed by the destructor
    check_cuda(cudaMallocHost(&bindings_.back().host, alloc), "cudaMallocHost");
    if (!context_->setTensorAddress(t.name.c_str(), b.device)) {
      throw RuntimeFailure("TensorRT rejects the address of tensor '" + t.name + "': " + logger_.last_error());
    }
    return bindings_.back();
  }

  void copy(std::size_t first, std::size_t last, cudaMemcpyKind kind) {
    for (std::size_t i = first; i < last; ++i) {
      Binding& b = bindings_[i];
      void* dst = kind == cudaMemcpyHostToDevice ? b.device : b.host;
      const void* src = kind == cudaMemcpyHostToDevice ? b.host : b.device;
      check_cuda(cudaMemcpyAsync(dst, src, b.bytes, kind, stream_), "cudaMemcpyAsync");
    }
  }

  double elapsed(std::size_t from, std::size_t to) const {
    float ms = 0.0f;
    check_cuda(cudaEventElapsedTime(&ms, events_[from], events_[to]), "cudaEventElapsedTime");
    return ms;
  }

  Logger logger_;  // outlives the runtime, engine and context declared after it
  std::unique_ptr<nvinfer1::IRuntime> runtime_;
  std::unique_ptr<nvinfer1::ICudaEngine> engine_;
  std::unique_ptr<nvinfer1::IExecutionContext> context_;
  std::string device_;
  bool transfers_;
  std::vector<TensorDesc> inputs_, outputs_;
  std::vector<Binding> bindings_;  // inputs first, then outputs
  std::size_t inputs_bound_ = 0;
  cudaStream_t stream_ = nullptr;
  std::array<cudaEvent_t, 4> events_{};
};

}  // namespace

std::unique_ptr<Backend> open_tensorrt(const Options& options) { return std::make_unique<TrtBackend>(options); }

}  // namespace ifseg_bench
