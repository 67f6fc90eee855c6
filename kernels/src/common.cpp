#include "twinbed/kernels/common.hpp"

#include <optional>
#include <string>

namespace twinbed::kernels {

#if !TWINBED_KERNELS_HAVE_CUDA
// Without the CUDA build there are no twins to run; the CUDA build defines these in cuda/context.cu.
bool cuda_available() noexcept { return false; }
std::optional<std::string> cuda_unavailable_reason() {
  return std::string(
      "twinbed was built without CUDA, so the CUDA twins and the CUDA backend are absent: configure on a machine "
      "with the CUDA toolkit (nvcc on PATH, or -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)");
}
#endif

}  // namespace twinbed::kernels
