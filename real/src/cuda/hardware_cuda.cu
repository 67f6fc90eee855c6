// CUDA side of probe_hardware(): asks the runtime, never aborts on a machine without a GPU.
#include <cuda_runtime.h>

#include "twinbed/real/hardware.hpp"

#ifdef TWINBED_HAVE_NCCL
#include <nccl.h>
#endif

namespace twinbed::real {

void probe_cuda(HardwareInfo& info) {
#ifdef TWINBED_HAVE_NCCL
  info.nccl_built = true;
  if (ncclGetVersion(&info.nccl_version) != ncclSuccess) info.nccl_version = 0;
#endif
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    info.note = std::string("no usable GPU: ") + cudaGetErrorString(err);
    return;
  }
  info.gpus = count;
  if (count == 0) {
    info.note = "no CUDA device visible";
    return;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) info.gpu_name = prop.name;
}

}  // namespace twinbed::real
