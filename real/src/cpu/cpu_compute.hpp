// Internal to real/src/cpu: the compute ops of a Plan executed on one CPU thread (Eigen, fp32), for the
// CPU backend (cpu_backend.cpp). Free of MPI.
#pragma once

#include <cstdint>
#include <vector>

#include "twinbed/core/model.hpp"
#include "twinbed/core/units.hpp"

namespace twinbed::real::detail {

// Subnormal floats flushed to zero on the calling thread (x86: MXCSR's FTZ and DAZ; elsewhere nothing),
// as GPU tensor cores and oneDNN's CPU kernels run. The CPU backend's ranks and `calibrate` both run in
// this mode, so a profile and the runs it predicts agree. Measured before it was set: the backward
// attention GEMM dP = dO·Vᵀ ran 7× slower than the forward GEMM of the same shape in the same run
// (1.18 ms against 0.17 ms), and at the forward's speed with subnormals flushed.
void flush_subnormals_on_this_thread();

// What one compute op executes after scaling (see CpuBackendOptions::compute_scale).
struct ScaledCompute {
  bool matmul = false;
  std::int64_t m = 0, n = 0, k = 0, batch = 0;  // matmul: batch GEMMs of m×k times k×n
  std::int64_t stream_floats = 0;                // memory-bound: floats read (and as many written)
  double flops = 0;                              // the cost's FLOPs × the executed fraction
  std::int64_t input_floats() const;             // floats the op reads (A and B; x)
  std::int64_t output_floats() const;            // floats it writes (C; y)
  std::int64_t pool_floats() const { return input_floats() + output_floats(); }
};

// The op `cost` scaled by `scale` in (0, 1]: m → max(1, round(m·scale)) for GEMM and attention costs,
// bytes → round(bytes·scale) for memory-bound ones. Throws InvalidArgument on negative shapes.
ScaledCompute scale_compute(const OpCost& cost, double scale);

// Memory for the ops, sized for the largest, allocated (and first touched) once, reused by every op: an
// input region every op reads from, filled once with normal floats in [0.5, 1) and never written, and
// an output region every op writes to and none reads. Inputs therefore never drift into subnormals or
// infinities, which x86 computes on a slow path (a batched attention GEMM reading values its
// predecessors left in a shared buffer ran 7x slower than the same GEMM on normal floats) — the values
// of a training step are normal floats. Not thread-safe.
class ComputePool {
 public:
  ComputePool(std::int64_t input_floats, std::int64_t output_floats);
  // Runs `op` on the pool (its input and output floats within the regions, else InvalidArgument).
  // Blocking; O(flops) or O(bytes).
  void run(const ScaledCompute& op);
  // Every cache line of the pool written back and dropped from every cache level (x86's clflush), so
  // the next op reads it from memory; false, doing nothing, where the processor has no such instruction
  // here. For calibrate's cache half-life (calibrate.cpp).
  bool evict_from_caches();
  std::int64_t size() const { return static_cast<std::int64_t>(input_.size() + output_.size()); }

 private:
  std::vector<float> input_, output_;
};

}  // namespace twinbed::real::detail
