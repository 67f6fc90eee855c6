// Built instead of nccl_collectives.cpp when CUDA was found but NCCL was not: the GEMM and copy
// benchmarks work, the collectives say how to get NCCL.
#include <optional>
#include <string>
#include <vector>

#include "twinbed/core/error.hpp"
#include "twinbed/real/cuda_collectives.hpp"

namespace twinbed::real {
namespace {

constexpr const char* kNoNccl =
    "twinbed was built with CUDA but without NCCL, so the GPU collectives are absent: install NCCL (libnccl-dev, "
    "or set NCCL_HOME to its prefix) and configure again";

}  // namespace

std::optional<std::string> nccl_unavailable_reason() {
  if (std::optional<std::string> reason = cuda_unavailable_reason()) return reason;
  return std::string(kNoNccl);
}

std::vector<CollectiveRow> measure_collectives_cuda(CollectiveOp, const std::string&, std::vector<Bytes>, int, int,
                                                    const CudaMeasureOptions&) {
  throw Unavailable(kNoNccl);
}

CollectiveRow measure_schedule_cuda(const Schedule&, const CudaMeasureOptions&) { throw Unavailable(kNoNccl); }

}  // namespace twinbed::real
