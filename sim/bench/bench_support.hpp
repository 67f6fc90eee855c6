// What the simulator benchmarks report beside wall time.
#pragma once

#include <sys/resource.h>

namespace twinbed::bench {

// The process's peak resident memory so far, MiB.
inline double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // ru_maxrss is KiB on Linux
}

}  // namespace twinbed::bench
