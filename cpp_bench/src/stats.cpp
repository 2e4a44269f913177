#include "stats.h"

#include <algorithm>
#include <numeric>

namespace ifseg_bench {

double percentile(const std::vector<double>& sorted, int percent) {
  const std::size_t n = sorted.size();
  const std::size_t rank = (static_cast<std::size_t>(percent) * n + 99) / 100;  // ceil(percent * n / 100), exact
  return sorted[rank == 0 ? 0 : rank - 1];
}

Summary summarize(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  Summary s;
  const std::size_t n = values.size();
  s.count = n;
  s.min = values.front();
  s.max = values.back();
  s.mean = std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(n);
  s.median = n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
  s.p90 = percentile(values, 90);
  s.p95 = percentile(values, 95);
  s.p99 = percentile(values, 99);
  return s;
}

}  // namespace ifseg_bench
