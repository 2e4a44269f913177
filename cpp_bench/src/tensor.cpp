#include "tensor.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "errors.h"

namespace ifseg_bench {
namespace {

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

float uniform_pm1(uint64_t& state) {
  return static_cast<float>(splitmix64(state) >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

/// IEEE binary16 bits of `value`, rounded to nearest even.
uint16_t to_half(float value) {
  uint32_t x;
  std::memcpy(&x, &value, sizeof x);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t biased = (x >> 23) & 0xFFu;
  uint32_t mant = x & 0x7FFFFFu;
  if (biased == 0xFFu) return static_cast<uint16_t>(sign | 0x7C00u | (mant ? 0x200u : 0u));
  const int32_t exp = static_cast<int32_t>(biased) - 127 + 15;
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7C00u);
  uint32_t shift = 13;
  uint32_t bits = 0;
  if (exp <= 0) {
    if (exp < -10) return static_cast<uint16_t>(sign);
    mant |= 0x800000u;
    shift = static_cast<uint32_t>(14 - exp);
  } else {
    bits = static_cast<uint32_t>(exp) << 10;
  }
  uint32_t half = bits | (mant >> shift);
  const uint32_t rest = mant & ((1u << shift) - 1u);
  const uint32_t midpoint = 1u << (shift - 1u);
  if (rest > midpoint || (rest == midpoint && (half & 1u))) ++half;  // a carry rolls into the exponent
  return static_cast<uint16_t>(sign | half);
}

/// bfloat16 bits of `value`, rounded to nearest even (finite inputs only).
uint16_t to_bfloat16(float value) {
  uint32_t x;
  std::memcpy(&x, &value, sizeof x);
  x += 0x7FFFu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

int64_t parse_dim(const std::string& text, const std::string& item) {
  errno = 0;
  char* end = nullptr;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  const bool bad_text = text.empty() || *end != '\0' || text[0] == '+' || text[0] == '-';
  if (bad_text || errno != 0 || value <= 0 || value > 2147483647) {
    throw UsageError("bad dimension '" + text + "' in --shapes item '" + item +
                     "': dimensions are positive integers (< 2^31) joined by 'x', e.g. images:1x3x512x512");
  }
  return value;
}

}  // namespace

const char* dtype_name(DataType dtype) {
  switch (dtype) {
    case DataType::kFloat32: return "float32";
    case DataType::kFloat16: return "float16";
    case DataType::kBFloat16: return "bfloat16";
    case DataType::kFloat64: return "float64";
    case DataType::kInt8: return "int8";
    case DataType::kUInt8: return "uint8";
    case DataType::kInt32: return "int32";
    case DataType::kInt64: return "int64";
    case DataType::kBool: return "bool";
  }
  return "unknown";
}

std::size_t dtype_size(DataType dtype) {
  switch (dtype) {
    case DataType::kFloat64:
    case DataType::kInt64: return 8;
    case DataType::kFloat32:
    case DataType::kInt32: return 4;
    case DataType::kFloat16:
    case DataType::kBFloat16: return 2;
    case DataType::kInt8:
    case DataType::kUInt8:
    case DataType::kBool: return 1;
  }
  return 0;
}

int64_t volume(const Dims& dims) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

bool is_concrete(const Dims& dims) {
  for (int64_t d : dims) {
    if (d < 0) return false;
  }
  return true;
}

std::string format_dims(const Dims& dims) {
  if (dims.empty()) return "scalar";
  std::string out;
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (i) out += 'x';
    out += std::to_string(dims[i]);
  }
  return out;
}

ShapeMap parse_shapes(const std::string& spec) {
  ShapeMap shapes;
  std::size_t start = 0;
  while (start <= spec.size()) {
    std::size_t comma = spec.find(',', start);
    if (comma == std::string::npos) comma = spec.size();
    const std::string item = spec.substr(start, comma - start);
    const std::size_t colon = item.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == item.size()) {
      throw UsageError("bad --shapes item '" + item +
                       "': expected name:DIMS, e.g. --shapes=images:1x3x512x512,class_embeds:4x256");
    }
    const std::string name = item.substr(0, colon);
    if (shapes.count(name)) throw UsageError("input '" + name + "' is given twice in --shapes");
    Dims dims;
    const std::string text = item.substr(colon + 1);
    std::size_t pos = 0;
    while (true) {
      const std::size_t x = text.find('x', pos);
      dims.push_back(parse_dim(text.substr(pos, x == std::string::npos ? std::string::npos : x - pos), item));
      if (x == std::string::npos) break;
      pos = x + 1;
    }
    shapes[name] = dims;
    start = comma + 1;
  }
  return shapes;
}

void fill_random(void* dst, DataType dtype, std::size_t count, uint64_t seed) {
  uint64_t state = seed;
  auto* bytes = static_cast<unsigned char*>(dst);
  for (std::size_t i = 0; i < count; ++i) {
    switch (dtype) {
      case DataType::kFloat32: {
        const float v = uniform_pm1(state);
        std::memcpy(bytes + 4 * i, &v, 4);
        break;
      }
      case DataType::kFloat64: {
        const double v = uniform_pm1(state);
        std::memcpy(bytes + 8 * i, &v, 8);
        break;
      }
      case DataType::kFloat16: {
        const uint16_t v = to_half(uniform_pm1(state));
        std::memcpy(bytes + 2 * i, &v, 2);
        break;
      }
      case DataType::kBFloat16: {
        const uint16_t v = to_bfloat16(uniform_pm1(state));
        std::memcpy(bytes + 2 * i, &v, 2);
        break;
      }
      case DataType::kInt8:
      case DataType::kUInt8: bytes[i] = static_cast<unsigned char>(splitmix64(state) % 8); break;
      case DataType::kBool: bytes[i] = static_cast<unsigned char>(splitmix64(state) & 1u); break;
      case DataType::kInt32: {
        const int32_t v = static_cast<int32_t>(splitmix64(state) % 8);
        std::memcpy(bytes + 4 * i, &v, 4);
        break;
      }
      case DataType::kInt64: {
        const int64_t v = static_cast<int64_t>(splitmix64(state) % 8);
        std::memcpy(bytes + 8 * i, &v, 8);
        break;
      }
    }
  }
}

}  // namespace ifseg_bench
