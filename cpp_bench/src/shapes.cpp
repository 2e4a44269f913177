#include "shapes.h"

#include "errors.h"

namespace ifseg_bench {
namespace {

std::string input_names(const std::vector<TensorDesc>& inputs) {
  std::string names;
  for (const TensorDesc& t : inputs) names += (names.empty() ? "" : ", ") + t.name;
  return names;
}

/// "Nx3xNxN" for a declared -1x3x-1x-1: what the user has to fill in.
std::string template_dims(const Dims& dims) {
  std::string out;
  for (std::size_t i = 0; i < dims.size(); ++i) out += (i ? "x" : "") + (dims[i] < 0 ? "N" : std::to_string(dims[i]));
  return out;
}

void check_declared(const TensorDesc& input, const Dims& dims) {
  if (dims.size() != input.dims.size()) {
    throw UsageError("--shapes gives input '" + input.name + "' " + std::to_string(dims.size()) + " dimensions (" +
                     format_dims(dims) + ") but the model declares " + std::to_string(input.dims.size()) + " (" +
                     format_dims(input.dims) + ")");
  }
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (input.dims[i] >= 0 && input.dims[i] != dims[i]) {
      throw UsageError("--shapes gives input '" + input.name + "' " + format_dims(dims) +
                       " but the model fixes dimension " + std::to_string(i) + " to " +
                       std::to_string(input.dims[i]) + " (" + format_dims(input.dims) + ")");
    }
  }
}

}  // namespace

ShapeMap resolve_shapes(const Backend& backend, const ShapeMap& requested) {
  const std::vector<TensorDesc>& inputs = backend.inputs();
  for (const auto& entry : requested) {
    bool known = false;
    for (const TensorDesc& t : inputs) known = known || t.name == entry.first;
    if (!known) {
      throw UsageError("--shapes names '" + entry.first + "', which is not an input of the model (its inputs: " +
                       input_names(inputs) + ")");
    }
  }
  ShapeMap shapes;
  for (const TensorDesc& input : inputs) {
    const auto given = requested.find(input.name);
    if (given != requested.end()) {
      check_declared(input, given->second);
      backend.check_shape(input, given->second);
      shapes[input.name] = given->second;
    } else if (is_concrete(input.dims)) {
      shapes[input.name] = input.dims;
    } else if (std::optional<Dims> fallback = backend.default_shape(input)) {
      shapes[input.name] = *fallback;
    } else {
      throw UsageError("input '" + input.name + "' has dynamic shape " + format_dims(input.dims) +
                       "; give its shape with --shapes=" + input.name + ":" + template_dims(input.dims) +
                       " (N = the size to benchmark)");
    }
  }
  return shapes;
}

}  // namespace ifseg_bench
