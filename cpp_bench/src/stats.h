// Latency statistics.
#pragma once

#include <cstddef>
#include <vector>

namespace ifseg_bench {

struct Summary {
  std::size_t count = 0;
  double min = 0, max = 0, mean = 0, median = 0, p90 = 0, p95 = 0, p99 = 0;
};

/// Nearest-rank percentile of ascending `sorted` values: the smallest value with at least `percent`% of
/// the values at or below it (0 < percent <= 100, sorted not empty).
double percentile(const std::vector<double>& sorted, int percent);

/// Summary of `values` (not empty); the median of an even count is the mean of the two middle values.
Summary summarize(std::vector<double> values);

}  // namespace ifseg_bench
