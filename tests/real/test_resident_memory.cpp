// ResidentPeak: the operating system's view of how much memory the process held, which the CPU backend
// reports beside the plan's peak. Skipped where /proc cannot measure it.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <memory>

#include "twinbed/real/resident_memory.hpp"
#include "twinbed/core/units.hpp"

namespace twinbed::real {
namespace {

// `bytes` obtained from the C allocator with one byte written per page: resident, as the backend's
// tensors are. The volatile writes keep the compiler from eliding the allocation.
struct Touched {
  explicit Touched(std::int64_t bytes) : p(static_cast<unsigned char*>(std::malloc(static_cast<std::size_t>(bytes)))) {
    volatile unsigned char* v = p.get();
    for (std::int64_t i = 0; i < bytes; i += 4096) v[i] = 1;
  }
  struct Free {
    void operator()(unsigned char* q) const { std::free(q); }
  };
  std::unique_ptr<unsigned char, Free> p;
};

TEST(ResidentPeak, SeesMemoryTouchedAfterStartAndKeepsItsHighestPoint) {
  ResidentPeak peak;
  peak.start();
  if (!peak.available()) GTEST_SKIP() << "/proc/self/status or clear_refs not usable here";
  EXPECT_LT(peak.peak_above_start(), 8 * MiB);  // nothing allocated yet (the kernel's counters lag a little)
  {
    const Touched big(64 * MiB);
    EXPECT_GE(peak.peak_above_start(), 60 * MiB);
  }
  const Touched small(8 * MiB);
  // The 64 MiB were given back; the peak stays. Upper bound: 64 MiB, the 8 MiB if the allocator kept the
  // big block, and AddressSanitizer's shadow (1/8).
  EXPECT_GE(peak.peak_above_start(), 60 * MiB);
  EXPECT_LE(peak.peak_above_start(), 90 * MiB);
  // A new start measures from here.
  peak.start();
  EXPECT_LT(peak.peak_above_start(), 8 * MiB);
}

TEST(ResidentPeak, UnavailableReadsMinusOne) {
  const ResidentPeak never_started;
  EXPECT_FALSE(never_started.available());
  EXPECT_EQ(never_started.peak_above_start(), -1);
}

}  // namespace
}  // namespace twinbed::real
