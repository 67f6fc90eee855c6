// What the CPU backend needs in every build, with or without MPI: checking its options, and its place
// in the backend registry.
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "../backend_options.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/real/collectives.hpp"
#include "twinbed/real/cpu_backend.hpp"
#include "twinbed/real/cuda_backend.hpp"

namespace twinbed::real {

void validate(const CpuBackendOptions& options) {
  detail::validate_shared_options(options.collective_algorithm, options.ranks_per_host, options.warmup_iters);
  if (!(options.compute_scale > 0 && options.compute_scale <= 1))  // also rejects NaN
    throw InvalidArgument("compute_scale must be in (0, 1] (got " + std::to_string(options.compute_scale) + ")");
  if (options.memory_budget <= 0)
    throw InvalidArgument("memory_budget must be > 0 bytes (got " + std::to_string(options.memory_budget) + ")");
}

CpuBackendOptions cpu_backend_options(const Experiment& experiment) {
  CpuBackendOptions options;
  options.collective_algorithm = detail::experiment_collective_algorithm(experiment, options.collective_algorithm);
  return options;
}

void add_real_backends(BackendRegistry& registry) {
  registry.add("real-cpu", "CPU ranks over MPI on this machine, one process per rank", [](const BackendSetup& setup) {
    return std::make_unique<CpuBackend>(cpu_backend_options(*setup.experiment));
  });
  add_cuda_backend(registry);  // "real-cuda" (cuda_backend.hpp)
}

}  // namespace twinbed::real
