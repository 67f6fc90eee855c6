// Internal to real/src/cpu: the memory a rank's Alloc/Free ops stand for, allocated for real by the CPU
// backend (cpu_backend.hpp). Free of MPI.
//
// Without a planned arena every Alloc takes its bytes from the C allocator and Free returns them. With
// one (the zrdf pass, Program::arena), the arena is one allocation made before the first op, and a
// tensor placed in it lives at its planned offset: its Alloc touches its bytes there (first and last byte,
// and one per 4 KiB page), so an offset or size past the arena is a write out of bounds, which
// AddressSanitizer reports. Every allocated tensor is touched the same way, so its pages are resident
// (the memory is real, not only reserved). held() is the allocator counter: the bytes obtained for live
// tensors and the arena; peak() its highest value.
// Iterations: a program allocates the model state at its start and never frees it; next_iteration()
// carries what is live into the next iteration, whose Alloc of it finds it allocated and reuses it (the
// state persists, as in training).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "twinbed/core/plan.hpp"

namespace twinbed::real::detail {

class TensorMemory {
 public:
  explicit TensorMemory(const Program& program);
  ~TensorMemory();
  TensorMemory(const TensorMemory&) = delete;
  TensorMemory& operator=(const TensorMemory&) = delete;

  // Alloc / Free op `op` of the program. An Alloc of a tensor already live, or a Free of one that is not,
  // throws InvalidArgument naming it (validate(plan) rules both out).
  void apply(const PlanOp& op);
  // What is live now is carried into the next iteration (see above).
  void next_iteration();

  std::int64_t held() const { return held_; }
  std::int64_t peak() const { return peak_; }

  // The largest number of bytes the program holds at once in program order: the arena, plus the live
  // tensors outside it. For the memory budget, before anything is allocated.
  static std::int64_t program_peak(const Program& program);

 private:
  const Program* program_;
  std::unique_ptr<unsigned char[]> arena_;
  std::vector<unsigned char*> live_;  // by tensor id: its bytes (in the arena or its own), or nullptr
  std::vector<std::int64_t> size_;    // by tensor id: bytes allocated on its own (0 in the arena)
  std::vector<bool> carried_;         // by tensor id: live since an earlier iteration
  std::int64_t held_ = 0, peak_ = 0;
};

}  // namespace twinbed::real::detail
