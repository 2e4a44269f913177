// ifseg_bench: latency benchmark of IFSeg models on TensorRT or ONNX Runtime, in the spirit of trtexec.
#include <chrono>
#include <cstdio>
#include <memory>
#include <new>

#include "backend.h"
#include "errors.h"
#include "options.h"
#include "report.h"
#include "shapes.h"

namespace ifseg_bench {
namespace {

constexpr const char* kBatchInput = "images";

/// The batch size: first dimension of the "images" input, else of the first input.
void set_batch(RunInfo& info) {
  const TensorDesc* batch_input = info.inputs.empty() ? nullptr : &info.inputs.front();
  for (const TensorDesc& t : info.inputs) {
    if (t.name == kBatchInput) batch_input = &t;
  }
  if (batch_input && !batch_input->dims.empty()) {
    info.batch = batch_input->dims.front();
    info.batch_input = batch_input->name;
  } else {
    info.batch = 1;
    info.batch_input = "none";
  }
}

int run(const Options& opt) {
  if (!opt.export_times.empty()) check_output_path(opt.export_times);
  std::unique_ptr<Backend> backend = open_backend(opt);
  const ShapeMap shapes = resolve_shapes(*backend, opt.shapes);

  RunInfo info;
  info.command_line = opt.command_line;
  info.model = opt.engine.empty() ? opt.onnx : opt.engine;
  info.backend = backend->description();
  info.device = backend->device();
  info.outputs = backend->prepare(shapes, opt.seed);
  for (TensorDesc t : backend->inputs()) {
    t.dims = shapes.at(t.name);
    info.inputs.push_back(t);
  }
  set_batch(info);
  info.warmup = opt.warmup;
  info.min_iterations = opt.iterations;
  info.min_duration_s = opt.duration_s;
  info.seed = opt.seed;
  print_setup(info);

  for (int i = 0; i < opt.warmup; ++i) backend->run();
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  double elapsed_s = 0.0;
  while (info.samples.size() < static_cast<std::size_t>(opt.iterations) || elapsed_s < opt.duration_s) {
    info.samples.push_back(backend->run());
    elapsed_s = std::chrono::duration<double>(Clock::now() - start).count();
  }
  info.walltime_s = elapsed_s;
  print_summary(info);

  if (!opt.export_times.empty()) {
    write_times_json(opt.export_times, info);
    std::printf("[I] Exported times of %zu iterations to %s\n", info.samples.size(), opt.export_times.c_str());
  }
  std::printf("&&&& PASSED ifseg_bench # %s\n", opt.command_line.c_str());
  return 0;
}

}  // namespace
}  // namespace ifseg_bench

int main(int argc, char** argv) {
  using namespace ifseg_bench;
  try {
    const Options opt = parse_args(argc, argv);
    if (opt.help) {
      std::fputs(usage().c_str(), stdout);
      std::printf("\nCompiled-in backends: %s\n", compiled_backends().c_str());
      return 0;
    }
    return run(opt);
  } catch (const BenchError& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", one_line(e.what()).c_str());
    return e.exit_code();
  } catch (const std::bad_alloc&) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: out of host memory; try smaller --shapes\n");
    return 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", one_line(e.what()).c_str());
    return 1;
  }
}
