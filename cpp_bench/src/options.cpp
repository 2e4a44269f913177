#include "options.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <set>

#include "errors.h"

namespace ifseg_bench {
namespace {

const std::set<std::string> kValueOptions = {"--onnx",    "--engine", "--shapes", "--warmup", "--iterations",
                                             "--duration", "--seed",  "--ep",     "--threads", "--device",
                                             "--export-times"};
const std::set<std::string> kFlagOptions = {"--no-transfers", "--verbose", "--help", "-h"};

long long parse_int(const std::string& flag, const std::string& text, long long lo, long long hi) {
  errno = 0;
  char* end = nullptr;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0 || value < lo || value > hi) {
    throw UsageError(flag + " expects an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                     "], got '" + text + "'");
  }
  return value;
}

double parse_seconds(const std::string& flag, const std::string& text) {
  errno = 0;
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || errno != 0 || !std::isfinite(value) || value < 0.0 || value > 86400.0) {
    throw UsageError(flag + " expects seconds in [0, 86400], got '" + text + "'");
  }
  return value;
}

}  // namespace

std::string usage() {
  return "usage: ifseg_bench (--onnx=MODEL.onnx | --engine=MODEL.engine) [options]\n"
         "\n"
         "Latency benchmark for IFSeg models (TensorRT engines or ONNX models through ONNX Runtime).\n"
         "Options take --flag=value or --flag value.\n"
         "  --onnx=FILE           ONNX model, run with ONNX Runtime\n"
         "  --engine=FILE         serialized TensorRT engine (.engine / .plan)\n"
         "  --shapes=SPEC         input shapes, e.g. images:1x3x512x512,prompt_embeds:1x21x256,class_embeds:4x256\n"
         "                        (needed for dynamic inputs; TensorRT defaults to the opt shapes of the\n"
         "                        engine's optimization profile 0)\n"
         "  --warmup=N            untimed iterations first (default 10)\n"
         "  --iterations=N        at least N timed iterations (default 100)\n"
         "  --duration=S          and at least S seconds of timed iterations (default 0)\n"
         "  --seed=N              seed of the pseudo-random input data (default 1)\n"
         "  --ep=cpu|cuda|tensorrt  ONNX Runtime execution provider (default cpu)\n"
         "  --threads=N           ONNX Runtime intra-op threads (default 0: its own choice)\n"
         "  --device=N            CUDA device (default 0)\n"
         "  --no-transfers        TensorRT: keep inputs/outputs on the GPU (no H2D/D2H copies timed)\n"
         "  --export-times=FILE   write the summary and every iteration's times as JSON\n"
         "  --verbose             print the runtime library's log\n"
         "  --help                this text\n";
}

Options parse_args(int argc, char** argv) {
  Options opt;
  opt.command_line = "ifseg_bench";
  for (int i = 1; i < argc; ++i) opt.command_line += std::string(" ") + argv[i];

  std::set<std::string> seen;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool has_value = false;
    const std::size_t eq = arg.find('=');
    if (arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_value = true;
    }
    if (kFlagOptions.count(arg)) {
      if (has_value) throw UsageError(arg + " takes no value");
    } else if (kValueOptions.count(arg)) {
      if (!has_value) {
        if (i + 1 >= argc) throw UsageError(arg + " needs a value (see --help)");
        value = argv[++i];
      }
    } else {
      throw UsageError("unknown argument '" + std::string(argv[i]) + "' (see --help)");
    }
    if (!seen.insert(arg == "-h" ? "--help" : arg).second) throw UsageError(arg + " is given twice");

    if (arg == "--help" || arg == "-h") opt.help = true;
    else if (arg == "--no-transfers") opt.transfers = false;
    else if (arg == "--verbose") opt.verbose = true;
    else if (arg == "--onnx") opt.onnx = value;
    else if (arg == "--engine") opt.engine = value;
    else if (arg == "--shapes") opt.shapes = parse_shapes(value);
    else if (arg == "--warmup") opt.warmup = static_cast<int>(parse_int(arg, value, 0, 1000000));
    else if (arg == "--iterations") opt.iterations = static_cast<int>(parse_int(arg, value, 1, 10000000));
    else if (arg == "--duration") opt.duration_s = parse_seconds(arg, value);
    else if (arg == "--seed") opt.seed = static_cast<uint64_t>(parse_int(arg, value, 0, 9223372036854775807LL));
    else if (arg == "--threads") opt.threads = static_cast<int>(parse_int(arg, value, 0, 1024));
    else if (arg == "--device") opt.device = static_cast<int>(parse_int(arg, value, 0, 1024));
    else if (arg == "--export-times") opt.export_times = value;
    else if (arg == "--ep") {
      if (value != "cpu" && value != "cuda" && value != "tensorrt") {
        throw UsageError("--ep must be cpu, cuda or tensorrt, got '" + value + "'");
      }
      opt.ep = value;
    }
  }
  if (opt.help) return opt;

  if (opt.onnx.empty() == opt.engine.empty()) {
    throw UsageError("give exactly one model: --onnx=MODEL.onnx or --engine=MODEL.engine (see --help)");
  }
  if (!opt.engine.empty() && (seen.count("--ep") || seen.count("--threads"))) {
    throw UsageError("--ep and --threads apply to ONNX Runtime (--onnx) only");
  }
  if (!opt.onnx.empty() && !opt.transfers) {
    throw UsageError("--no-transfers applies to TensorRT engines (--engine) only");
  }
  if (seen.count("--export-times") && opt.export_times.empty()) {
    throw UsageError("--export-times needs a file name");
  }
  return opt;
}

}  // namespace ifseg_bench
