// The CUDA real backend: one training iteration of a Plan executed on GPUs, one process per GPU (under
// mpirun for several; alone, a job of one rank on device 0), returning the same Trace as the simulator
// and the CPU backend (core/trace.hpp), registered as "real-cuda".
//
// Every rank runs plan.program(rank) by the execution core's rules (core/plan_exec.hpp). One host thread
// per rank enqueues the ops, in program order, on CUDA streams: the plan's Compute and Collective streams
// are one CUDA stream each (FIFO in both), Sends and Recvs one stream per direction and peer offset (NCCL's
// point-to-point calls block until the peer's call runs, so they must not queue behind each other). A
// dependency on an op of another stream is a cudaStreamWaitEvent on that op's event: its end, or for a
// Send (eager in the plan) its start. src/cuda/plan_launch.hpp is that planning, GPU-free and tested
// everywhere.
//
// What each op runs:
//  - Compute, GEMM / attention cost: cuBLAS (cublasGemmStridedBatchedEx) of the cost's shape and batch in
//    its dtype — fp32 (true fp32), tf32, bf16, fp16 on tensor cores with fp32 accumulation; fp8 runs as
//    bf16 (cublasLt's scaled fp8 matmul is not wired). LoRA's adapter GEMMs likewise. DSA's block / 2:4
//    sparse GEMMs: see below.
//  - Compute, memory-bound cost: a streaming kernel y = a·x + b over the op's bytes (half read, half
//    written).
//  - Compute, a technique kernel: the kernels' CUDA twins (kernels/, namespace cuda) in the roles and
//    semantics of the CPU backend's technique_ops.hpp, on synthetic gradient-like device buffers (the CPU
//    backend's values, filled on the host once and copied) and state kept across iterations:
//      TGC compress    error feedback + exact top-k + quantisation (cuda::ef_accumulate, topk,
//                      ef_clear_sent, quantize, dequantize, scatter_add; cuBLAS saxpy for the residual)
//                      packed into a device payload of real::TgcCodec's format (cudaMemcpyAsync).
//      tgc.requantize  decode + add + encode of the op's elements (dequantize, add, quantize).
//      TGC decompress  decode of what the collective delivered (every member's all-gathered payload),
//                      summed; after an all-reduce, or under a schedule, the rank's own payload.
//      DSA refresh     importance + masks (unstructured, b×b block, 2:4) of a 1/every slice per iteration.
//      DSA masked step masked Adam of the targets, then the step's other bytes streamed.
//      loss scaling    unscale with the overflow check (device_kernels.cu; Error after the iteration).
//      statistics      max|g| and Σg² of a 1/every slice (device_kernels.cu).
//      sparse GEMMs    the twins' BSR GEMM (block a multiple of 16: the twin's tile) and 2:4 gather GEMM
//                      over W cut to whole blocks; other blocks: a dense cuBLAS GEMM of the non-zero work
//                      (k × density), a STAND-IN.
//    The twins that return a count (top-k, the mask selections) synchronise their stream and allocate
//    scratch per call: the host waits there before enqueuing further ops (see plan_launch.hpp).
//  - Collective: NCCL on one communicator per (plan stream, group kind) (ncclCommSplit of the job's),
//    NCCL's own collective for "native" (all-to-all as grouped ncclSend/ncclRecv), else the registered
//    schedule over ncclSend/ncclRecv exactly as measure_collectives_cuda runs it; fp32 data, sizes rounded
//    up to the element rule as the CPU backend rounds them. A TGC exchange's collective under "native"
//    (all-gather or all-reduce) carries the payloads themselves, from the exchange's payload buffer into
//    its output buffer; the first time each all-gather of payloads runs, the output is copied back and
//    every member's payload re-encoded on the host (TgcCodec) and compared float by float
//    (payload_check(); Error when any differs). Under a registered schedule payloads are not carried
//    (the plan's bytes move).
//  - Send / Recv: ncclSend / ncclRecv of the plan's bytes, on a communicator per peer offset.
//  - Alloc / Free: the model state (allocated, never freed in the program) in device memory allocated
//    once and kept across iterations; other tensors cudaMallocAsync / cudaFreeAsync on their stream (the
//    device's pool keeps freed memory for the next iteration); under a planned arena (zrdf) one
//    cudaMalloc of the arena, every tensor at its offset, nothing allocated per op. Memory samples at the
//    times the ops' stream reached them. The allocator's own count beside them (Trace::resident_peak):
//    the device pool's reserved-memory high-water mark over the first iteration plus the model state
//    and arena.
//
// Timing: CUDA events recorded around every op on its stream, relative to a start event recorded after
// cudaDeviceSynchronize and a barrier over the job; every other stream waits for the start event. Ranks
// on one host are aligned to within the barrier's skew (microseconds). Spans, step time and gathering
// to rank 0 as the CPU backend (cpu_backend.hpp): one span per op except Alloc, Free and Recv; compute
// spans carry the cost's FLOPs, communication spans the plan's bytes.
//
// Not thread-safe; every rank of the job constructs one and calls run() with the same plan.
#pragma once

#include <memory>
#include <string>

#include "twinbed/core/backend.hpp"
#include "twinbed/core/experiment.hpp"
#include "twinbed/core/plan.hpp"
#include "twinbed/core/trace.hpp"
#include "twinbed/real/cpu_backend.hpp"  // PayloadCheck

namespace twinbed::real {

struct CudaBackendOptions {
  // "native" (NCCL's own collectives) or a registered schedule (ring, tree, rhd, direct, hierarchical)
  // over ncclSend/ncclRecv.
  std::string collective_algorithm = "native";
  int ranks_per_host = 0;  // for "hierarchical"; 0 = one host
  // Whole-plan iterations run before the recorded one, >= 0 (cuBLAS heuristics, NCCL connections,
  // the allocator's pool).
  int warmup_iters = 1;
  bool operator==(const CudaBackendOptions&) const = default;
};

// Throws UnknownName (listing real_collective_algorithm_names()) for an unknown algorithm,
// InvalidArgument for out-of-range numbers. Needs no GPU.
void validate(const CudaBackendOptions& options);

// The options an experiment gives: its collective algorithm ("auto" runs NCCL's own, "native").
CudaBackendOptions cuda_backend_options(const Experiment& experiment);

class CudaBackend : public Backend {
 public:
  // Throws as validate(options) does, then Unavailable with the one-line reason when this build has no
  // CUDA or NCCL, or when some rank of the job sees no GPU (agreed over MPI, so every rank throws).
  explicit CudaBackend(CudaBackendOptions options = {});
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string name() const override { return "real-cuda"; }

  // options.warmup_iters unrecorded iterations, then the recorded one. Returns on rank 0 every rank's
  // spans and memory samples, on the others their own; backend "real-cuda", recorded_rank = identity,
  // names = plan.names, step_time = the latest span end over all ranks; on rank 0 every rank's
  // resident_peak (above).
  // Throws InvalidArgument, on every rank alike and before any GPU work, when the job's size differs from
  // plan.world_size(), validate(plan) fails, group members put a kind's collectives on different streams,
  // the algorithm lacks an op the plan uses, or the rank's buffers do not fit its GPU's free memory;
  // Error naming the call when CUDA, NCCL or cuBLAS fails.
  Trace run(const Plan& plan) override;

  // This rank's verification of TGC's all-gathered payloads so far (see the file's comment).
  const PayloadCheck& payload_check() const { return payload_check_; }

 private:
  struct Impl;
  CudaBackendOptions options_;
  PayloadCheck payload_check_;
  std::unique_ptr<Impl> impl_;
};

// Registers "real-cuda": a CudaBackend with cuda_backend_options of the setup's experiment. Present in
// every build; making one without a GPU throws Unavailable with the reason.
void add_cuda_backend(BackendRegistry& registry);

}  // namespace twinbed::real
