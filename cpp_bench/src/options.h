// Command-line options of ifseg_bench (trtexec-like: --flag=value or --flag value).
#pragma once

#include <cstdint>
#include <string>

#include "tensor.h"

namespace ifseg_bench {

struct Options {
  std::string onnx;           ///< --onnx: ONNX model, run with ONNX Runtime
  std::string engine;         ///< --engine: serialized TensorRT engine (.engine / .plan)
  ShapeMap shapes;            ///< --shapes
  int warmup = 10;            ///< --warmup: untimed iterations
  int iterations = 100;       ///< --iterations: at least this many timed iterations
  double duration_s = 0.0;    ///< --duration: and at least this many seconds of timed iterations
  uint64_t seed = 1;          ///< --seed: input data seed
  std::string ep = "cpu";     ///< --ep: ONNX Runtime execution provider (cpu, cuda, tensorrt)
  int threads = 0;            ///< --threads: ONNX Runtime intra-op threads (0 = its default)
  int device = 0;             ///< --device: CUDA device index
  bool transfers = true;      ///< --no-transfers clears it (TensorRT: time without H2D/D2H copies)
  std::string export_times;   ///< --export-times: JSON file with the summary and every iteration's times
  bool verbose = false;       ///< --verbose: runtime library logs
  bool help = false;          ///< --help
  std::string command_line;   ///< the invocation, echoed in the report
};

/// Parses argv; throws UsageError on any bad argument.
Options parse_args(int argc, char** argv);

/// The --help text.
std::string usage();

}  // namespace ifseg_bench
