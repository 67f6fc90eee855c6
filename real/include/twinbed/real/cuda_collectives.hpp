// The CUDA part of the real backend: collectives on GPUs over NCCL (the shared schedules over
// ncclSend/ncclRecv, and NCCL's own collectives as "native"), with the same crafted inputs and #wrong
// check as the CPU backend, plus the micro-benchmarks calibration needs (a cuBLAS GEMM, a device copy).
//
// Compiled whenever nvcc is found; usable only where a GPU is visible. Every function below exists in
// every build, so callers need no #ifdefs: without a GPU (or without CUDA / NCCL in the build) they throw
// Unavailable with a one-line reason, never crash. cuda_unavailable_reason() asks first, without throwing.
//
// PROCESSES AND DEVICES. One process per GPU. When MPI is running in this process (an MpiSession is
// alive), the ranks are MPI_COMM_WORLD's: each rank uses device (node-local rank) % (devices visible),
// which on one machine is rank % devices; rank 0 creates the ncclUniqueId and broadcasts it over MPI,
// and every rank joins with ncclCommInitRank. Without MPI running (or without MPI in the build) the
// process is a job of one rank on device 0: a 1-rank communicator, which exercises the whole path (the
// schedules have zero rounds for one rank; their data is still filled, copied and checked). Several
// ranks on one GPU are not supported (NCCL refuses duplicate devices in one communicator).
//
// The functions leave the rank's device current on the calling thread (cudaSetDevice), so later GEMM
// or copy timings on that thread run on the same GPU. Call them from the thread that created the
// MpiSession; they are not thread-safe (they may setenv, see CudaMeasureOptions::nccl_algo).
//
// Failures are typed: InvalidArgument / UnknownName for arguments (found on every rank alike, before any
// communication), Unavailable when a GPU, CUDA or NCCL is absent (agreed over MPI, so every rank throws),
// Error naming the failed CUDA / NCCL / cuBLAS / MPI call otherwise (cuda_check.hpp). An Error on one
// rank only may leave the others waiting inside NCCL; main decides (usually MpiSession::abort_job).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "twinbed/core/collective_table.hpp"
#include "twinbed/core/model.hpp"
#include "twinbed/core/schedule.hpp"
#include "twinbed/core/units.hpp"
#include "twinbed/kernels/common.hpp"
#include "twinbed/real/collectives.hpp"

namespace twinbed::real {

// nullopt when CUDA is built and at least one device is visible; otherwise why not, in one line
// ("no CUDA device: <the runtime's message> (<error name>)", or that twinbed was built without CUDA).
// Never throws. It is twinbed's one CUDA probe, kernels::cuda_unavailable_reason (kernels/common.hpp).
using kernels::cuda_unavailable_reason;
// The same, and also nullopt only when NCCL is built in (what measure_collectives_cuda needs).
std::optional<std::string> nccl_unavailable_reason();

// NCCL algorithm names accepted by CudaMeasureOptions::nccl_algo (NCCL_ALGO's values, as NCCL 2.28
// spells them): Ring, Tree, CollnetDirect, CollnetChain, NVLS, NVLSTree, PAT.
std::vector<std::string> nccl_algo_names();

struct CudaMeasureOptions : MeasureOptions {
  // For "native" only: the algorithm NCCL must use, one of nccl_algo_names() (case-insensitive); empty
  // leaves the choice to NCCL (and to an NCCL_ALGO already in the environment). It is passed as
  // NCCL_ALGO through setenv just before the communicator is created (NCCL reads it at creation) and the
  // previous value is restored right after, so it affects only this call's communicator. NCCL fails the
  // collective (an Error naming the call) when the algorithm cannot run that op, e.g. Tree for broadcast.
  std::string nccl_algo;
  bool operator==(const CudaMeasureOptions&) const = default;
};

// One row per size, in order, for `op` with `algorithm` (a registered schedule, or "native" = NCCL's own:
// ncclAllReduce in place, ncclReduceScatter, ncclAllGather, ncclBroadcast in place, ncclReduce, and
// all-to-all as grouped ncclSend/ncclRecv) on all the ranks of the job (see above). Same contract as
// measure_collectives (collectives.hpp): `root` for broadcast and reduce, `ranks_per_host` for
// hierarchical (0 = one host); the same element rule, crafted inputs and expected results
// (collective_data.hpp); identical rows on every rank; a row with *wrong > 0 is a failed run for the
// caller to report.
//
// Per size: when options.check, fresh inputs are filled on the host and copied to the device, one
// iteration runs, the result is copied back and the wrong floats are counted on every rank and summed;
// then fresh inputs, `warmup_iters` iterations, and `iters` iterations timed with CUDA events on the
// rank's stream, after a cudaStreamSynchronize and an MPI_Barrier. time_us = the maximum over ranks of
// the mean per iteration (MPI_Allreduce MAX). Timed iterations run back to back on the same buffers, so
// only the checked iteration's data means anything.
//
// A schedule executes round by round, each round one ncclGroupStart/ncclGroupEnd of this rank's
// ncclRecv and ncclSend calls (one per transfer; NCCL matches calls to one peer inside a group in
// order, so both ends agree without packing). Sends read the round-start data: a receive lands in
// scratch unless it is a lone overwrite of a chunk this rank does not send in that round; after the
// group, scratch is applied on the same stream: reduce = an element-wise fp32 add kernel, else a
// device-to-device copy. Zero-float transfers are skipped at both ends. Device memory per rank: the
// schedule's workspace (every chunk back to back, as the CPU executor) plus the largest round's scratch.
//
// Throws UnknownName (listing real_collective_algorithm_names()) for an unknown algorithm or nccl_algo,
// InvalidArgument for a size the element rule rejects, an op the algorithm does not implement, a bad
// root / ranks_per_host or bad options, all before any GPU work; then Unavailable("no CUDA device: ...")
// when some rank sees no GPU, or when CUDA or NCCL is not built in.
std::vector<CollectiveRow> measure_collectives_cuda(CollectiveOp op, const std::string& algorithm,
                                                    std::vector<Bytes> sizes, int root, int ranks_per_host,
                                                    const CudaMeasureOptions& options);
// The same with NCCL choosing its algorithm.
std::vector<CollectiveRow> measure_collectives_cuda(CollectiveOp op, const std::string& algorithm,
                                                    std::vector<Bytes> sizes, int root, int ranks_per_host,
                                                    const MeasureOptions& options);

// One schedule (any Schedule, registered or hand-written) executed as above: the CUDA twin of
// measure_schedule (collectives.hpp). Throws InvalidArgument when the schedule's ranks differ from the
// job's, its chunks break the element rule, a transfer names no valid ranks or chunk, or options.nccl_algo
// is set; then as measure_collectives_cuda.
CollectiveRow measure_schedule_cuda(const Schedule& schedule, const CudaMeasureOptions& options);

// Seconds per GEMM C(m×n) = A(m×k)·B(k×n) (column-major, no transposes, alpha 1, beta 0) with
// cublasGemmEx on the calling thread's current device, A, B and C all of `dtype` and fp32 accumulation:
// FP32 is true fp32 (CUBLAS_COMPUTE_32F), TF32 fp32 storage on TF32 tensor cores
// (CUBLAS_COMPUTE_32F_FAST_TF32), BF16 and FP16 on tensor cores with fp32 accumulation. Inputs are
// pseudo-random in [-1, 1) (zeros would flatter the tensor cores' power draw). Three untimed GEMMs,
// then `iters` timed back to back with CUDA events. The rate is 2·m·n·k / the result.
// Throws InvalidArgument unless 1 <= m, n, k <= INT_MAX, iters >= 1 and dtype is FP32, TF32, BF16 or
// FP16; Unavailable without a GPU; Error when a CUDA / cuBLAS call fails (out of memory included).
double time_gemm_cuda(std::int64_t m, std::int64_t n, std::int64_t k, DType dtype, int iters);

// Device-to-device copy bandwidth: `bytes` copied by cudaMemcpyAsync between two buffers of the current
// device, two untimed copies, then `iters` timed with CUDA events; returns bytes copied per second
// (the memory system moves twice that: each byte is read once and written once).
// Throws InvalidArgument unless bytes >= 1 and iters >= 1; Unavailable without a GPU; Error on failure.
BytesPerSec copy_bandwidth_cuda(Bytes bytes, int iters);

// The schedule executor's reduction, dst[i] += src[i] in fp32, and its CPU reference with the same
// signature (the twin the tests compare it with). The CUDA one copies both spans to the current device,
// runs the kernel the executor uses and copies dst back. Throws InvalidArgument when the sizes differ;
// the CUDA one Unavailable without a GPU.
void add_floats_cuda(std::span<float> dst, std::span<const float> src);
void add_floats_cpu(std::span<float> dst, std::span<const float> src);

}  // namespace twinbed::real
