// The GPU presence check and event timing.
#include <cuda_runtime.h>

#include <optional>
#include <string>

#include "device.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/real/cuda_check.hpp"
#include "twinbed/real/cuda_collectives.hpp"

namespace twinbed::real {

namespace cuda_detail {

int require_devices() {
  if (const std::optional<std::string> reason = cuda_unavailable_reason()) throw Unavailable(*reason);
  int count = 0;
  CUDA_CHECK(cudaGetDeviceCount(&count));
  return count;
}

double elapsed_seconds(const Event& start, const Event& stop) {
  CUDA_CHECK(cudaEventSynchronize(stop.get()));
  float ms = 0;
  CUDA_CHECK(cudaEventElapsedTime(&ms, start.get(), stop.get()));
  return static_cast<double>(ms) * 1e-3;
}

}  // namespace cuda_detail
}  // namespace twinbed::real
