// How much memory this process really holds, measured by the operating system: the CPU backend's
// resident peak beside the plan's (it allocates what the plan says; this measures what that cost), and
// `twinbed train`'s peak memory per variant. Free of MPI.
//
// Linux: the resident set (VmRSS) and its high-water mark (VmHWM) in /proc/self/status; writing "5" to
// /proc/self/clear_refs resets the high-water mark to the current resident set (proc(5)). The kernel
// keeps its counters per CPU and folds them in batches, so a reading may lag by a few hundred KiB.
// Elsewhere, or where /proc cannot be read or clear_refs written, available() is false.
#pragma once

#include <cstdint>

namespace twinbed::real {

class ResidentPeak {
 public:
  // Returns free heap memory to the system (glibc's malloc_trim), so that memory freed earlier and then
  // reused counts as it is touched again, and starts measuring: the baseline is the resident set now and
  // the high-water mark is reset to it.
  void start();
  // The resident set's highest point since start(), above its baseline, in bytes; -1 when not available.
  // Includes everything the process touched meanwhile: the plan's tensors and the kernels' scratch, and
  // also the allocator's own overhead and rounding to whole pages.
  std::int64_t peak_above_start() const;
  bool available() const { return available_; }

 private:
  bool available_ = false;
  std::int64_t baseline_ = 0;
};

}  // namespace twinbed::real
