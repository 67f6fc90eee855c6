// Built instead of cuda_backend.cpp when this build lacks CUDA or NCCL: the same API, saying why when used.
#include <optional>
#include <string>
#include <utility>

#include "twinbed/core/error.hpp"
#include "twinbed/real/cuda_backend.hpp"
#include "twinbed/real/cuda_collectives.hpp"

namespace twinbed::real {

struct CudaBackend::Impl {};

CudaBackend::CudaBackend(CudaBackendOptions options) : options_(std::move(options)) {
  validate(options_);
  throw Unavailable(nccl_unavailable_reason().value_or("twinbed was built without CUDA or NCCL"));
}

CudaBackend::~CudaBackend() = default;

Trace CudaBackend::run(const Plan&) { throw Unavailable("twinbed was built without CUDA or NCCL: no CUDA backend"); }

}  // namespace twinbed::real
