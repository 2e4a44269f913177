// ONNX Runtime backend: CPU, or the CUDA / TensorRT execution providers when the library has them.
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <chrono>

#include "backend.h"
#include "errors.h"

namespace ifseg_bench {
namespace {

DataType to_dtype(ONNXTensorElementDataType type, const std::string& name) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return DataType::kFloat32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return DataType::kFloat16;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return DataType::kBFloat16;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return DataType::kFloat64;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return DataType::kInt8;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return DataType::kUInt8;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return DataType::kInt32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return DataType::kInt64;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: return DataType::kBool;
    default: throw UsageError("tensor '" + name + "' has an ONNX element type (" + std::to_string(type) +
                              ") that ifseg_bench does not support");
  }
}

ONNXTensorElementDataType to_onnx(DataType dtype) {
  switch (dtype) {
    case DataType::kFloat32: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    case DataType::kFloat16: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
    case DataType::kBFloat16: return ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16;
    case DataType::kFloat64: return ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE;
    case DataType::kInt8: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8;
    case DataType::kUInt8: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
    case DataType::kInt32: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32;
    case DataType::kInt64: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
    case DataType::kBool: return ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL;
  }
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
}

TensorDesc describe(const std::string& name, const Ort::TypeInfo& info) {
  if (info.GetONNXType() != ONNX_TYPE_TENSOR) {
    throw UsageError("model input/output '" + name + "' is not a tensor; ifseg_bench benchmarks tensor models only");
  }
  const auto tensor = info.GetTensorTypeAndShapeInfo();
  Dims dims = tensor.GetShape();
  for (int64_t& d : dims) d = d < 0 ? -1 : d;
  return TensorDesc{name, to_dtype(tensor.GetElementType(), name), dims};
}

void require_provider(const std::string& provider) {
  const std::vector<std::string> available = Ort::GetAvailableProviders();
  if (std::find(available.begin(), available.end(), provider) == available.end()) {
    std::string names;
    for (const std::string& p : available) names += (names.empty() ? "" : ", ") + p;
    throw UsageError("this ONNX Runtime library has no " + provider + " (it has: " + names +
                     "); link ifseg_bench against a GPU build of ONNX Runtime or use --ep=cpu");
  }
}

/// Applies string key/value options through one of ORT's Update*ProviderOptions functions.
template <typename Options, typename Update>
void update_options(Options* options, Update update, const std::vector<std::pair<std::string, std::string>>& kv) {
  std::vector<const char*> keys, values;
  for (const auto& p : kv) {
    keys.push_back(p.first.c_str());
    values.push_back(p.second.c_str());
  }
  Ort::ThrowOnError(update(options, keys.data(), values.data(), kv.size()));
}

void append_cuda(Ort::SessionOptions& session_options, int device) {
  require_provider("CUDAExecutionProvider");
  const OrtApi& api = Ort::GetApi();
  OrtCUDAProviderOptionsV2* cuda = nullptr;
  Ort::ThrowOnError(api.CreateCUDAProviderOptions(&cuda));
  std::unique_ptr<OrtCUDAProviderOptionsV2, decltype(api.ReleaseCUDAProviderOptions)> guard(
      cuda, api.ReleaseCUDAProviderOptions);
  update_options(cuda, api.UpdateCUDAProviderOptions, {{"device_id", std::to_string(device)}});
  session_options.AppendExecutionProvider_CUDA_V2(*cuda);
}

void append_tensorrt(Ort::SessionOptions& session_options, int device) {
  require_provider("TensorrtExecutionProvider");
  const OrtApi& api = Ort::GetApi();
  OrtTensorRTProviderOptionsV2* trt = nullptr;
  Ort::ThrowOnError(api.CreateTensorRTProviderOptions(&trt));
  std::unique_ptr<OrtTensorRTProviderOptionsV2, decltype(api.ReleaseTensorRTProviderOptions)> guard(
      trt, api.ReleaseTensorRTProviderOptions);
  update_options(trt, api.UpdateTensorRTProviderOptions, {{"device_id", std::to_string(device)}});
  session_options.AppendExecutionProvider_TensorRT_V2(*trt);
  append_cuda(session_options, device);  // for the nodes TensorRT does not take
}

class OrtBackend final : public Backend {
 public:
  // Without --verbose ORT's own log stays off: its errors reach the user as one-line exceptions.
  explicit OrtBackend(const Options& options)
      : env_(options.verbose ? ORT_LOGGING_LEVEL_VERBOSE : ORT_LOGGING_LEVEL_FATAL, "ifseg_bench"),
        memory_(Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault)),
        ep_(options.ep),
        device_(options.device) {
    Ort::SessionOptions session_options;
    session_options.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
    if (options.threads > 0) session_options.SetIntraOpNumThreads(options.threads);
    if (ep_ == "cuda") append_cuda(session_options, device_);
    if (ep_ == "tensorrt") append_tensorrt(session_options, device_);
    try {
      session_ = Ort::Session(env_, options.onnx.c_str(), session_options);
    } catch (const Ort::Exception& e) {
      throw UsageError("cannot load ONNX model '" + options.onnx + "': " + e.what());
    }
    Ort::AllocatorWithDefaultOptions allocator;
    for (std::size_t i = 0; i < session_.GetInputCount(); ++i) {
      const std::string name = session_.GetInputNameAllocated(i, allocator).get();
      inputs_.push_back(describe(name, session_.GetInputTypeInfo(i)));
    }
    for (std::size_t i = 0; i < session_.GetOutputCount(); ++i) {
      output_names_.push_back(session_.GetOutputNameAllocated(i, allocator).get());
      describe(output_names_.back(), session_.GetOutputTypeInfo(i));  // outputs must be tensors too
    }
  }

  std::string description() const override {
    const char* provider = ep_ == "cuda" ? "CUDAExecutionProvider"
                           : ep_ == "tensorrt" ? "TensorrtExecutionProvider"
                                               : "CPUExecutionProvider";
    return std::string("ONNX Runtime ") + OrtGetApiBase()->GetVersionString() + " (" + provider + ")";
  }

  std::string device() const override {
    return ep_ == "cpu" ? "CPU" : "CUDA device " + std::to_string(device_);
  }

  const std::vector<TensorDesc>& inputs() const override { return inputs_; }

  std::optional<Dims> default_shape(const TensorDesc&) const override { return std::nullopt; }

  void check_shape(const TensorDesc&, const Dims&) const override {}

  std::vector<TensorDesc> prepare(const ShapeMap& shapes, uint64_t seed) override {
    for (std::size_t i = 0; i < inputs_.size(); ++i) {
      const TensorDesc& t = inputs_[i];
      const Dims& dims = shapes.at(t.name);
      const std::size_t count = static_cast<std::size_t>(volume(dims));
      input_data_.emplace_back(std::max<std::size_t>(1, count * dtype_size(t.dtype)));
      fill_random(input_data_.back().data(), t.dtype, count, seed + 0x1000193ull * i);
      input_values_.push_back(Ort::Value::CreateTensor(memory_, input_data_.back().data(), count * dtype_size(t.dtype),
                                                       dims.data(), dims.size(), to_onnx(t.dtype)));
      input_names_.push_back(t.name);
    }
    // A first run gives the output shapes; later runs write into buffers allocated once here.
    std::vector<Ort::Value> first;
    try {
      first = run_session(nullptr);
    } catch (const Ort::Exception& e) {
      throw UsageError(std::string("ONNX Runtime cannot run the model with these input shapes: ") + e.what());
    }
    std::vector<TensorDesc> outputs;
    for (std::size_t i = 0; i < first.size(); ++i) {
      const TensorDesc t = describe(output_names_[i], first[i].GetTypeInfo());
      const std::size_t bytes = static_cast<std::size_t>(volume(t.dims)) * dtype_size(t.dtype);
      output_data_.emplace_back(std::max<std::size_t>(1, bytes));
      output_values_.push_back(Ort::Value::CreateTensor(memory_, output_data_.back().data(), bytes, t.dims.data(),
                                                        t.dims.size(), to_onnx(t.dtype)));
      outputs.push_back(t);
    }
    return outputs;
  }

  Sample run() override {
    const auto start = std::chrono::steady_clock::now();
    try {
      run_session(output_values_.data());
    } catch (const Ort::Exception& e) {
      throw RuntimeFailure(std::string("ONNX Runtime failed during the benchmark: ") + e.what());
    }
    Sample sample;
    sample.latency_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    return sample;
  }

 private:
  /// Runs the session on the prepared inputs, into `outputs` when given (else ORT allocates and returns them).
  std::vector<Ort::Value> run_session(Ort::Value* outputs) {
    std::vector<const char*> in_names, out_names;
    for (const std::string& n : input_names_) in_names.push_back(n.c_str());
    for (const std::string& n : output_names_) out_names.push_back(n.c_str());
    if (outputs) {
      session_.Run(run_options_, in_names.data(), input_values_.data(), in_names.size(), out_names.data(), outputs,
                   out_names.size());
      return {};
    }
    return session_.Run(run_options_, in_names.data(), input_values_.data(), in_names.size(), out_names.data(),
                        out_names.size());
  }

  Ort::Env env_;
  Ort::MemoryInfo memory_;
  Ort::Session session_{nullptr};
  Ort::RunOptions run_options_;
  std::string ep_;
  int device_;
  std::vector<TensorDesc> inputs_;
  std::vector<std::string> input_names_, output_names_;
  std::vector<std::vector<unsigned char>> input_data_, output_data_;
  std::vector<Ort::Value> input_values_, output_values_;
};

}  // namespace

std::unique_ptr<Backend> open_onnxruntime(const Options& options) {
  const OrtApi* api = OrtGetApiBase()->GetApi(ORT_API_VERSION);
  if (api == nullptr) {
    throw RuntimeFailure(std::string("the ONNX Runtime library (") + OrtGetApiBase()->GetVersionString() +
                         ") is older than the headers ifseg_bench was built with (C API " +
                         std::to_string(ORT_API_VERSION) + "); rebuild against matching headers");
  }
  Ort::InitApi(api);
  try {
    return std::make_unique<OrtBackend>(options);
  } catch (const Ort::Exception& e) {
    throw RuntimeFailure(std::string("ONNX Runtime: ") + e.what());
  }
}

}  // namespace ifseg_bench
