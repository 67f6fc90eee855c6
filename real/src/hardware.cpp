#include "twinbed/real/hardware.hpp"

#include "twinbed/kernels/common.hpp"

namespace twinbed::real {

#ifdef TWINBED_HAVE_CUDA
// In src/cuda/hardware_cuda.cu.
void probe_cuda(HardwareInfo& info);
#endif

HardwareInfo probe_hardware() {
  HardwareInfo info;
#ifdef TWINBED_HAVE_CUDA
  info.cuda_built = true;
  probe_cuda(info);
#else
  info.note = kernels::cuda_unavailable_reason().value_or("");  // the one probe: built without CUDA
#endif
  return info;
}

}  // namespace twinbed::real
