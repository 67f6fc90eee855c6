#include "twinbed/real/resident_memory.hpp"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <string>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace twinbed::real {
namespace {

// A "Key:   1234 kB" line of /proc/self/status, in bytes; -1 when absent.
std::int64_t status_kib(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string prefix = std::string(key) + ":";
  while (std::getline(in, line))
    if (line.compare(0, prefix.size(), prefix) == 0) return 1024 * std::strtoll(line.c_str() + prefix.size(), nullptr, 10);
  return -1;
}

}  // namespace

void ResidentPeak::start() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
  std::ofstream reset("/proc/self/clear_refs");
  reset << "5";
  reset.flush();
  baseline_ = status_kib("VmRSS");
  available_ = reset.good() && baseline_ >= 0 && status_kib("VmHWM") >= 0;
}

std::int64_t ResidentPeak::peak_above_start() const {
  if (!available_) return -1;
  const std::int64_t high = status_kib("VmHWM");
  return high < 0 ? -1 : std::max<std::int64_t>(0, high - baseline_);
}

}  // namespace twinbed::real
