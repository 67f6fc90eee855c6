// CUDA side of probe_hardware(): asks the runtime, never aborts on a machine without a GPU.
#include <cuda_runtime.h>

#include <optional>
#include <string>

#include "twinbed/kernels/common.hpp"
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
  // twinbed's one CUDA probe says whether there is a usable device, and why not.
  if (const std::optional<std::string> why = kernels::cuda_unavailable_reason()) {
    info.note = *why;
    return;
  }
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) return;
  info.gpus = count;
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) info.gpu_name = prop.name;
}

}  // namespace twinbed::real
