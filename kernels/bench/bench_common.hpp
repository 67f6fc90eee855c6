// Shared pieces of bench_kernels: the machine's measured bandwidths (memcpy, STREAM triad, one read
// pass over 64 MiB buffers, measured once at start-up in this same binary) and counters that report
// each kernel as a fraction of them.
//
// Byte convention (STREAM's): bytes read + bytes written by the kernel, no write-allocate traffic.
#pragma once

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "gaussian_like.hpp"

namespace twinbed::kernels::bench {

struct Baseline {
  double memcpy_Bps = 0;  // 2·size / t for a memcpy of size bytes
  double triad_Bps = 0;   // 12·n / t for a[i] = b[i] + s·c[i] over fp32
  double read_Bps = 0;    // 4·n / t for one vectorised pass reading n floats
};

// Measured on first use (best of several repetitions).
const Baseline& baseline();

// Elements in a 64 MiB fp32 buffer: well above this machine's last-level cache.
inline constexpr std::size_t kStreamElems = std::size_t{64} << 18;


// SetBytesProcessed plus frac_of_triad, frac_of_memcpy and frac_of_read counters (bytes moved per
// iteration over the measured bandwidths). All benchmarks time wall-clock (UseRealTime), like the baseline.
void report_bandwidth(benchmark::State& state, double bytes_per_iter);

}  // namespace twinbed::kernels::bench
