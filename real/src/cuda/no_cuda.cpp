// Built instead of the CUDA sources when CMake found no nvcc: the API stays the same and says, when
// used, how to get the CUDA backend.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "twinbed/core/error.hpp"
#include "twinbed/real/cuda_collectives.hpp"

namespace twinbed::real {
namespace {

// The probe (kernels/common.hpp) says why: twinbed was built without CUDA.
[[noreturn]] void unavailable() { throw Unavailable(cuda_unavailable_reason().value_or("built without CUDA")); }

}  // namespace

std::optional<std::string> nccl_unavailable_reason() { return cuda_unavailable_reason(); }

std::vector<CollectiveRow> measure_collectives_cuda(CollectiveOp, const std::string&, std::vector<Bytes>, int, int,
                                                    const CudaMeasureOptions&) {
  unavailable();
}
double time_gemm_cuda(std::int64_t, std::int64_t, std::int64_t, DType, int) { unavailable(); }
BytesPerSec copy_bandwidth_cuda(Bytes, int) { unavailable(); }
void add_floats_cuda(std::span<float>, std::span<const float>) { unavailable(); }
CollectiveRow measure_schedule_cuda(const Schedule&, const CudaMeasureOptions&) { unavailable(); }

}  // namespace twinbed::real
