// Internal to real/src/cpu: the compute ops of a Plan executed on one CPU thread (Eigen, fp32), for the
// CPU backend (cpu_backend.cpp). Free of MPI.
#pragma once

#include <cstdint>
#include <vector>

#include "twinbed/core/model.hpp"
#include "twinbed/core/units.hpp"

namespace twinbed::real::detail {

// What one compute op executes after scaling (see CpuBackendOptions::compute_scale).
struct ScaledCompute {
  bool matmul = false;
  std::int64_t m = 0, n = 0, k = 0, batch = 0;  // matmul: batch GEMMs of m×k times k×n
  std::int64_t stream_floats = 0;                // memory-bound: floats read (and as many written)
  double flops = 0;                              // the cost's FLOPs × the executed fraction
  std::int64_t pool_floats() const;              // floats of pool the op needs
};

// The op `cost` scaled by `scale` in (0, 1]: m → max(1, round(m·scale)) for GEMM and attention costs,
// bytes → round(bytes·scale) for memory-bound ones. Throws InvalidArgument on negative shapes.
ScaledCompute scale_compute(const OpCost& cost, double scale);

// A pool of floats sized for the largest op, allocated (and first touched) once, reused by every op.
// Not thread-safe.
class ComputePool {
 public:
  explicit ComputePool(std::int64_t floats);
  // Runs `op` on the pool (op.pool_floats() <= size(), else InvalidArgument). Blocking; O(flops) or
  // O(bytes).
  void run(const ScaledCompute& op);
  std::int64_t size() const { return static_cast<std::int64_t>(pool_.size()); }

 private:
  std::vector<float> pool_;
};

}  // namespace twinbed::real::detail
