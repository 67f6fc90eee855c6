// Calibration of this machine's GPU for the simulator: the MachineProfile (core/profile.hpp) that
// `compare --backend real-cuda` simulates with, so that the comparison measures the model, not a guess
// of the hardware. The GPU twin of calibrate.hpp; `twinbed calibrate --gpu` writes it.
//
// On the calling thread's current device (device 0 of a process alone):
//  - GEMM: cuBLAS (time_gemm_cuda) over a full grid of (m, n, k) in fp32, tf32, bf16 and fp16; each
//    dtype's best rate is its gemm_rate and every shape a gemm_sample the simulator interpolates over.
//    fp8 gets the bf16 measurements, as the CUDA backend runs fp8 GEMMs in bf16 (cuda_backend.hpp).
//  - Memory bandwidth: device-to-device copies (copy_bandwidth_cuda) of working sets from L2-sized to
//    far beyond it, counted as bytes read + written (a streaming op's bytes, as the CPU calibration counts them);
//    the largest gives memory_bandwidth.
//  - Launch overhead: the time of a 8×8×8 GEMM, back to back (what one tiny op costs on the stream).
//  - Link (NCCL alpha/beta): in a job of two GPUs (mpirun -np 2), NCCL's broadcast from rank 0 to rank 1
//    timed by size (measure_collectives_cuda); latency = the 8-byte time, bandwidth from the
//    two largest sizes. One GPU has no link: the profile leaves it out.
// Provenance: the GPU's name as `machine`, the UTC date, `ranks` = the job's size; git_revision and
// tool are the caller's to fill.
#pragma once

#include <cstdint>
#include <vector>

#include "twinbed/core/profile.hpp"

namespace twinbed::real {

struct CudaCalibrateOptions {
  std::vector<std::int64_t> gemm_dims = {256, 1024, 4096};  // m, n and k each take every value
  int gemm_iters = 10;
  std::vector<Bytes> copy_bytes = {4 * MiB, 64 * MiB, 512 * MiB};  // per buffer
  int copy_iters = 20;
  std::vector<Bytes> link_sizes = {8, 64 * KiB, 4 * MiB, 64 * MiB};
  int ranks = 1;  // the job's GPUs (processes); the link is measured when there are exactly 2
};

// Throws Unavailable (one line) without a GPU or CUDA, and without NCCL only when the link is measured
// (ranks 2); Error when a call fails.
MachineProfile calibrate_cuda(const CudaCalibrateOptions& options);

}  // namespace twinbed::real
