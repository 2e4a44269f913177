// Tensor descriptions, shape parsing (trtexec's --shapes syntax) and deterministic input data.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ifseg_bench {

enum class DataType { kFloat32, kFloat16, kBFloat16, kFloat64, kInt8, kUInt8, kInt32, kInt64, kBool };

/// Tensor dimensions; -1 marks a dynamic dimension in a model's declared shape.
using Dims = std::vector<int64_t>;
/// Input name -> concrete dimensions.
using ShapeMap = std::map<std::string, Dims>;

struct TensorDesc {
  std::string name;
  DataType dtype;
  Dims dims;
};

const char* dtype_name(DataType dtype);
std::size_t dtype_size(DataType dtype);

/// Number of elements of concrete `dims` (1 for a scalar).
int64_t volume(const Dims& dims);
bool is_concrete(const Dims& dims);
/// "1x3x512x512", "-1x3x-1x-1"; "scalar" for rank 0.
std::string format_dims(const Dims& dims);

/// Parses "name:1x3x512x512,other:4x256" (the name ends at its last ':'). Throws UsageError.
ShapeMap parse_shapes(const std::string& spec);

/// Fills `count` elements with pseudo-random data that depends only on `seed`:
/// floats uniform in [-1, 1), integers in [0, 8), booleans 0/1.
void fill_random(void* dst, DataType dtype, std::size_t count, uint64_t seed);

}  // namespace ifseg_bench
