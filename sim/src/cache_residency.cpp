#include "twinbed/sim/cache_residency.hpp"

#include <algorithm>
#include <cmath>

#include "twinbed/core/error.hpp"

namespace twinbed::sim {

CacheResidency::CacheResidency(Time half_life) : half_life_(half_life) {
  if (half_life <= Time{}) throw InvalidArgument("CacheResidency: the half-life must be positive");
}

double CacheResidency::cold_floats(const std::vector<Step>& steps, std::int64_t extent, Time now) const {
  double cold = 0;
  std::int64_t covered = 0;  // floats [0, covered) accounted for, latest step first
  for (auto it = steps.rbegin(); it != steps.rend() && covered < extent; ++it) {
    const std::int64_t end = std::min(it->extent, extent);
    const double age = std::max(0.0, (now - it->touched).seconds());
    cold += static_cast<double>(end - covered) * (1 - std::exp2(-age / half_life_.seconds()));
    covered = end;
  }
  return cold + static_cast<double>(extent - covered);  // never touched in this run
}

void CacheResidency::touch(std::vector<Step>& steps, std::int64_t extent, Time end) {
  if (extent <= 0) return;
  while (!steps.empty() && steps.back().extent <= extent) steps.pop_back();
  steps.push_back({extent, end});
}

double CacheResidency::cold_bytes(const PoolFootprint& f, Time now) const {
  return 4 * (cold_floats(input_, f.input_floats, now) + cold_floats(output_, f.output_floats, now));
}

void CacheResidency::touch(const PoolFootprint& f, Time end) {
  touch(input_, f.input_floats, end);
  touch(output_, f.output_floats, end);
}

}  // namespace twinbed::sim
