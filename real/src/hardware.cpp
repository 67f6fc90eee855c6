#include "twinbed/real/hardware.hpp"

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
  info.note = "built without CUDA (nvcc was not found at configure time)";
#endif
  return info;
}

}  // namespace twinbed::real
