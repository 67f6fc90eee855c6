// What the CPU backend needs in every build, with or without MPI: checking its options.
#include <algorithm>
#include <string>
#include <vector>

#include "twinbed/core/error.hpp"
#include "twinbed/real/collectives.hpp"
#include "twinbed/real/cpu_backend.hpp"

namespace twinbed::real {

void validate(const CpuBackendOptions& options) {
  const std::vector<std::string> known = real_collective_algorithm_names();
  if (std::find(known.begin(), known.end(), options.collective_algorithm) == known.end())
    throw UnknownName("collective algorithm", options.collective_algorithm, known);
  if (options.ranks_per_host < 0)
    throw InvalidArgument("ranks_per_host must be >= 0 (got " + std::to_string(options.ranks_per_host) + ")");
  if (options.warmup_iters < 0)
    throw InvalidArgument("warmup_iters must be >= 0 (got " + std::to_string(options.warmup_iters) + ")");
  if (!(options.compute_scale > 0 && options.compute_scale <= 1))  // also rejects NaN
    throw InvalidArgument("compute_scale must be in (0, 1] (got " + std::to_string(options.compute_scale) + ")");
  if (options.memory_budget <= 0)
    throw InvalidArgument("memory_budget must be > 0 bytes (got " + std::to_string(options.memory_budget) + ")");
}

}  // namespace twinbed::real
