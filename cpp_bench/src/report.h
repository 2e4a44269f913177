// The printed report (trtexec style) and the --export-times JSON file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "backend.h"
#include "tensor.h"

namespace ifseg_bench {

/// Everything a finished benchmark reports.
struct RunInfo {
  std::string command_line;
  std::string model;
  std::string backend;
  std::string device;
  std::vector<TensorDesc> inputs;   ///< with the shapes that were run
  std::vector<TensorDesc> outputs;  ///< with the shapes that were produced
  int warmup = 0;
  int min_iterations = 0;
  double min_duration_s = 0.0;
  uint64_t seed = 0;
  int64_t batch = 1;                ///< first dimension of the batch input ("images", else the first input)
  std::string batch_input;
  double walltime_s = 0.0;          ///< host wall clock of all timed iterations
  std::vector<Sample> samples;      ///< one per timed iteration
};

/// Throws UsageError if `path` cannot be created (missing or read-only directory, or a directory itself).
void check_output_path(const std::string& path);

/// "[I] ..." lines describing the run: backend, model, input and output shapes, iteration settings.
void print_setup(const RunInfo& info);

/// The "=== Performance summary ===" block: throughput and latency statistics.
void print_summary(const RunInfo& info);

/// Writes the run, its summary and every iteration's times to `path` as JSON, atomically
/// (a temporary file in the same directory, renamed over `path`). Throws RuntimeFailure.
void write_times_json(const std::string& path, const RunInfo& info);

}  // namespace ifseg_bench
