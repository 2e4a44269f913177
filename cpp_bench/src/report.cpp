#include "report.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>

#include "errors.h"
#include "stats.h"

namespace ifseg_bench {
namespace {

using Field = std::function<double(const Sample&)>;

std::string num(double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", value);
  return buf;
}

std::string json_num(double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", value);
  return buf;
}

std::string json_str(const std::string& text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

/// Values of `field` over the samples, or empty when the backend does not measure it.
std::vector<double> column(const std::vector<Sample>& samples, const Field& field) {
  std::vector<double> values;
  for (const Sample& s : samples) {
    if (field(s) < 0) return {};
    values.push_back(field(s));
  }
  return values;
}

struct Metric {
  const char* label;  // printed
  const char* key;    // JSON
  Field field;
};

const std::vector<Metric>& metrics() {
  static const std::vector<Metric> all = {
      {"Latency", "latency_ms", [](const Sample& s) { return s.latency_ms; }},
      {"Enqueue Time", "enqueue_ms", [](const Sample& s) { return s.enqueue_ms; }},
      {"H2D Latency", "h2d_ms", [](const Sample& s) { return s.h2d_ms; }},
      {"GPU Compute Time", "compute_ms", [](const Sample& s) { return s.compute_ms; }},
      {"D2H Latency", "d2h_ms", [](const Sample& s) { return s.d2h_ms; }},
  };
  return all;
}

std::string tensors_json(const std::vector<TensorDesc>& tensors) {
  std::string out = "{";
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const TensorDesc& t = tensors[i];
    out += (i ? ", " : "") + json_str(t.name) + ": {\"dtype\": " + json_str(dtype_name(t.dtype)) + ", \"shape\": [";
    for (std::size_t d = 0; d < t.dims.size(); ++d) out += (d ? ", " : "") + std::to_string(t.dims[d]);
    out += "]}";
  }
  return out + "}";
}

std::string summary_json(const Summary& s) {
  return "{\"min\": " + json_num(s.min) + ", \"max\": " + json_num(s.max) + ", \"mean\": " + json_num(s.mean) +
         ", \"median\": " + json_num(s.median) + ", \"p90\": " + json_num(s.p90) + ", \"p95\": " + json_num(s.p95) +
         ", \"p99\": " + json_num(s.p99) + "}";
}

std::string render_json(const RunInfo& info) {
  const double qps = static_cast<double>(info.samples.size()) / info.walltime_s;
  std::string out = "{\n";
  out += "  \"tool\": \"ifseg_bench\",\n";
  out += "  \"command\": " + json_str(info.command_line) + ",\n";
  out += "  \"model\": " + json_str(info.model) + ",\n";
  out += "  \"backend\": " + json_str(info.backend) + ",\n";
  out += "  \"device\": " + json_str(info.device) + ",\n";
  out += "  \"inputs\": " + tensors_json(info.inputs) + ",\n";
  out += "  \"outputs\": " + tensors_json(info.outputs) + ",\n";
  out += "  \"warmup\": " + std::to_string(info.warmup) + ",\n";
  out += "  \"min_iterations\": " + std::to_string(info.min_iterations) + ",\n";
  out += "  \"min_duration_s\": " + json_num(info.min_duration_s) + ",\n";
  out += "  \"seed\": " + std::to_string(info.seed) + ",\n";
  out += "  \"batch\": " + std::to_string(info.batch) + ",\n";
  out += "  \"iterations\": " + std::to_string(info.samples.size()) + ",\n";
  out += "  \"total_host_walltime_s\": " + json_num(info.walltime_s) + ",\n";
  out += "  \"throughput_qps\": " + json_num(qps) + ",\n";
  out += "  \"throughput_images_per_s\": " + json_num(qps * static_cast<double>(info.batch)) + ",\n";
  out += "  \"percentiles\": \"nearest-rank\",\n";
  out += "  \"summary\": {";
  bool first = true;
  for (const Metric& m : metrics()) {
    const std::vector<double> values = column(info.samples, m.field);
    if (values.empty()) continue;
    out += std::string(first ? "\n" : ",\n") + "    " + json_str(m.key) + ": " + summary_json(summarize(values));
    first = false;
  }
  out += "\n  },\n";
  out += "  \"times\": [";
  for (std::size_t i = 0; i < info.samples.size(); ++i) {
    out += i ? ",\n    {" : "\n    {";
    bool first_field = true;
    for (const Metric& m : metrics()) {
      const double v = m.field(info.samples[i]);
      if (v < 0) continue;
      out += std::string(first_field ? "" : ", ") + json_str(m.key) + ": " + json_num(v);
      first_field = false;
    }
    out += "}";
  }
  out += "\n  ]\n}\n";
  return out;
}

std::string parent_dir(const std::string& path) {
  const std::size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

void check_output_path(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    throw UsageError("--export-times '" + path + "' is a directory; give a file name such as times.json");
  }
  const std::string dir = parent_dir(path);
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    throw UsageError("--export-times directory '" + dir + "' does not exist; create it or choose another path");
  }
  if (access(dir.c_str(), W_OK) != 0) {
    throw UsageError("--export-times directory '" + dir + "' is not writable; choose another path");
  }
}

void print_setup(const RunInfo& info) {
  std::printf("&&&& RUNNING ifseg_bench # %s\n", info.command_line.c_str());
  std::printf("[I] === Model Options ===\n");
  std::printf("[I] Model: %s\n", info.model.c_str());
  std::printf("[I] Backend: %s\n", info.backend.c_str());
  std::printf("[I] Device: %s\n", info.device.c_str());
  std::printf("[I] Compiled-in backends: %s\n", compiled_backends().c_str());
  std::printf("[I] === Inference Options ===\n");
  for (const TensorDesc& t : info.inputs) {
    std::printf("[I] Input %s: %s %s\n", t.name.c_str(), dtype_name(t.dtype), format_dims(t.dims).c_str());
  }
  for (const TensorDesc& t : info.outputs) {
    std::printf("[I] Output %s: %s %s\n", t.name.c_str(), dtype_name(t.dtype), format_dims(t.dims).c_str());
  }
  std::printf("[I] Warmup: %d iterations\n", info.warmup);
  std::printf("[I] Iterations: at least %d, Duration: at least %s s\n", info.min_iterations,
              num(info.min_duration_s).c_str());
  std::printf("[I] Input data seed: %llu\n", static_cast<unsigned long long>(info.seed));
  std::fflush(stdout);
}

void print_summary(const RunInfo& info) {
  const double qps = static_cast<double>(info.samples.size()) / info.walltime_s;
  std::printf("[I] === Performance summary ===\n");
  std::printf("[I] Throughput: %s qps (%s images/s at batch %lld from '%s')\n", num(qps).c_str(),
              num(qps * static_cast<double>(info.batch)).c_str(), static_cast<long long>(info.batch),
              info.batch_input.c_str());
  for (const Metric& m : metrics()) {
    const std::vector<double> values = column(info.samples, m.field);
    if (values.empty()) continue;
    const Summary s = summarize(values);
    std::printf(
        "[I] %s: min = %s ms, max = %s ms, mean = %s ms, median = %s ms, percentile(90%%) = %s ms, "
        "percentile(95%%) = %s ms, percentile(99%%) = %s ms\n",
        m.label, num(s.min).c_str(), num(s.max).c_str(), num(s.mean).c_str(), num(s.median).c_str(),
        num(s.p90).c_str(), num(s.p95).c_str(), num(s.p99).c_str());
  }
  std::printf("[I] Total Host Walltime: %s s\n", num(info.walltime_s).c_str());
  std::printf("[I] Timed iterations: %zu\n", info.samples.size());
  std::fflush(stdout);
}

void write_times_json(const std::string& path, const RunInfo& info) {
  const std::string text = render_json(info);
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (!f) throw RuntimeFailure("cannot create '" + tmp + "': " + std::strerror(errno));
  const bool written = std::fwrite(text.data(), 1, text.size(), f) == text.size() && std::fflush(f) == 0 &&
                       fsync(fileno(f)) == 0;
  const int write_errno = errno;
  if (std::fclose(f) != 0 || !written) {
    std::remove(tmp.c_str());
    throw RuntimeFailure("cannot write '" + tmp + "': " + std::strerror(written ? errno : write_errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int rename_errno = errno;
    std::remove(tmp.c_str());
    throw RuntimeFailure("cannot rename '" + tmp + "' to '" + path + "': " + std::strerror(rename_errno));
  }
}

}  // namespace ifseg_bench
