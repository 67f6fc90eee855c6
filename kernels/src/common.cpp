#include "twinbed/kernels/common.hpp"

namespace twinbed::kernels {

#if !TWINBED_KERNELS_HAVE_CUDA
// Without the CUDA build there are no twins to run; the CUDA build defines these in cuda/context.cu.
bool cuda_available() noexcept { return false; }
std::string cuda_unavailable_reason() { return "twinbed_kernels was built without CUDA (no nvcc found)"; }
#endif

}  // namespace twinbed::kernels
