// What the CUDA Plan backend needs in every build, with or without CUDA: checking its options, and its
// place in the backend registry.
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "../backend_options.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/real/collectives.hpp"
#include "twinbed/real/cuda_backend.hpp"

namespace twinbed::real {

void validate(const CudaBackendOptions& options) {
  detail::validate_shared_options(options.collective_algorithm, options.ranks_per_host, options.warmup_iters);
}

CudaBackendOptions cuda_backend_options(const Experiment& experiment) {
  CudaBackendOptions options;
  options.collective_algorithm = detail::experiment_collective_algorithm(experiment, options.collective_algorithm);
  return options;
}

void add_cuda_backend(BackendRegistry& registry) {
  registry.add("real-cuda", "GPUs of this machine, one process per GPU (CUDA, cuBLAS, NCCL)", [](const BackendSetup& setup) {
    return std::make_unique<CudaBackend>(cuda_backend_options(*setup.experiment));
  });
}

}  // namespace twinbed::real
