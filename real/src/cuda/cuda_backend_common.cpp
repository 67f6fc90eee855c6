// What the CUDA Plan backend needs in every build, with or without CUDA: checking its options, and its
// place in the backend registry.
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "twinbed/core/error.hpp"
#include "twinbed/real/collectives.hpp"
#include "twinbed/real/cuda_backend.hpp"

namespace twinbed::real {

void validate(const CudaBackendOptions& options) {
  const std::vector<std::string> known = real_collective_algorithm_names();
  if (std::find(known.begin(), known.end(), options.collective_algorithm) == known.end())
    throw UnknownName("collective algorithm", options.collective_algorithm, known);
  if (options.ranks_per_host < 0)
    throw InvalidArgument("ranks_per_host must be >= 0 (got " + std::to_string(options.ranks_per_host) + ")");
  if (options.warmup_iters < 0)
    throw InvalidArgument("warmup_iters must be >= 0 (got " + std::to_string(options.warmup_iters) + ")");
}

CudaBackendOptions cuda_backend_options(const Experiment& experiment) {
  CudaBackendOptions options;
  if (experiment.simulation.collective_algorithm != "auto") options.collective_algorithm = experiment.simulation.collective_algorithm;
  return options;
}

void add_cuda_backend(BackendRegistry& registry) {
  registry.add("real-cuda", "GPUs of this machine, one process per GPU (CUDA, cuBLAS, NCCL)", [](const BackendSetup& setup) {
    return std::make_unique<CudaBackend>(cuda_backend_options(*setup.experiment));
  });
}

}  // namespace twinbed::real
