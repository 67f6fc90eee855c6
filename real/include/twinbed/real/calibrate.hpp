// Calibration of this machine for the simulator: micro-benchmarks whose results become the
// MachineProfile (core/profile.hpp) that `twinbed collectives --profile` and `compare` simulate with.
//
// Every rank of the MPI job measures at the same time, as the ranks of a real run compute and
// communicate at the same time (on a machine with fewer cores than ranks they share the cores, and the
// profile says so by its figures); each figure is the median over ranks.
//  - GEMM: C = A·B in fp32 (Eigen, one thread per rank) over a full grid of (m, n, k); the CPU backend runs
//    bf16/fp16 ops in fp32 too, so the profile gives those dtypes the fp32 rates.
//  - Memory bandwidth: the CPU backend's own memory-bound op, y = a·x + b (one array read, one written,
//    both counted, as the plan's memory-bound costs count bytes), over working sets from cache-sized to
//    far beyond the caches; the largest gives memory_bandwidth, all become memory_samples.
//  - Cache half-life: the same op on the largest working set the caches hold, timed after gaps in which
//    the rank touches no memory: how long until half its data must come from memory again (other
//    processes sharing the caches take them over), cache_half_life; none where that does not happen
//    within 64 ms.
//  - Launch overhead: the time of an 8×8×8 GEMM call (what one tiny op costs).
//  - Link: ranks paired (0,1), (2,3), … ping-pong at once; latency = the one-way time of an 8-byte
//    message, bandwidth from the two largest sizes (one-way time = latency + bytes / bandwidth).
#pragma once

#include <cstdint>
#include <vector>

#include "twinbed/core/profile.hpp"
#include "twinbed/real/mpi.hpp"

namespace twinbed::real {

struct CalibrateOptions {
  std::vector<std::int64_t> gemm_dims = {64, 256, 1024, 4096};  // m, n and k each take every value: a full
                                                                  // grid the simulator interpolates over
  double seconds_per_point = 0.03;                                // minimum timing per measurement
  std::vector<Bytes> stream_bytes = {16 * KiB, 128 * KiB, 1 * MiB, 8 * MiB, 64 * MiB};  // per array (x and y)
  std::vector<Bytes> p2p_sizes = {8, 1 << 10, 64 << 10, 1 << 20, 8 << 20, 32 << 20};
  // Technique kernels (profile.hpp's technique_kernel_keys) timed on gradients of this many elements
  // (a small model's gradient bucket), and DSA's sparse GEMMs on this m × n × k (m rows of X, W n×k).
  std::int64_t kernel_elements = 1 << 22;
  std::int64_t sparse_gemm_dim = 512;
};

// Collective over MPI_COMM_WORLD; returns the same profile on every rank. Provenance: host name, UTC
// date, the git revision the binary was built from, the job's rank count. Throws Error on MPI failure.
MachineProfile calibrate_cpu(const MpiSession& mpi, const CalibrateOptions& options);

// One GEMM sample measured now, as calibrate_cpu measures each of its own: m×n×k in fp32, every rank at
// once, FLOP/s. `median`: the FLOPs over the median rank's time, what a profile's sample records; `ranks`:
// each rank's own rate, in rank order, on every rank. `compare` times a profile's sample again with it to
// tell how fast the machine runs now against when it was calibrated, and how evenly it runs its ranks.
// Collective over MPI_COMM_WORLD.
struct GemmRates {
  FlopsPerSec median = 0;
  std::vector<FlopsPerSec> ranks;
};
GemmRates measure_gemm_rates(const MpiSession& mpi, std::int64_t m, std::int64_t n, std::int64_t k, double min_seconds);
// Its median alone.
FlopsPerSec measure_gemm_rate(const MpiSession& mpi, std::int64_t m, std::int64_t n, std::int64_t k, double min_seconds);

}  // namespace twinbed::real
