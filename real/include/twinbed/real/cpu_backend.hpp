// The CPU real backend: one training iteration of a Plan executed for real, one MPI process per rank,
// returning the same Trace the simulator returns (core/trace.hpp).
//
// What each op does on a rank (every rank runs plan.program(rank), following plan.hpp's execution
// semantics; see "Scheduling" below):
//  - Compute, Gemm / Attention cost: a real fp32 Eigen GEMM C = A·B of the cost's shape, `batch` times
//    (m×k times k×n, each batch element on its own memory). Memory-bound cost: a streaming kernel
//    y = a·x + b over op.bytes bytes (half read, half written).
//  - Compute ops of the technique passes (OpCost::kernel: TGC's compress / requantize / decompress,
//    DSA's mask refresh and masked Adam, precision's loss scaling and statistics) and GEMMs with DSA's
//    block or 2:4 sparsity: the kernels of kernels/ on buffers standing for the rank's tensors, with
//    the state the technique keeps across iterations (src/cpu/technique_ops.hpp says what runs).
//    LoRA's adapter GEMMs are GEMMs of their shapes, as above.
//  - Collective: the op on `bytes` of data (as floats), on a communicator holding the rank's group of
//    the op's kind (MPI_Comm_split of the plan's GroupSet, members ordered by ascending world rank, MPI_Comm_split's
//    key: the plan's order, build_plan listing GroupSet::members sorted), either
//    MPI's own non-blocking collective (algorithm "native": MPI_Iallreduce, MPI_Ireduce_scatter_block,
//    MPI_Iallgather, MPI_Ibcast, MPI_Ireduce, MPI_Ialltoall; root 0) or a registered schedule
//    (collective_algorithms.hpp) executed over MPI point-to-point exactly as collectives.hpp does.
//    A collective carrying a TGC payload moves the payload the compress op encoded (real::TgcCodec),
//    and the decompress op decodes what arrived; a quantised (dense) payload is reduced hop by hop:
//    the schedule (ring under "native": MPI's collectives cannot quantise at each hop) runs over the
//    decoded values with every transfer quantised (schedule_executor.hpp's wire codec). Both are
//    verified (PayloadCheck): all-gathered payloads float by float, reductions within the hops'
//    quantisation error of the exact sum.
//    Sizes the element rule rejects (collective_data.hpp) are rounded UP to the next accepted size
//    (a multiple of 4 bytes, or of 4·group size for reduce-scatter, all-gather, all-to-all); the span
//    records the plan's bytes.
//  - Send / Recv: MPI_Isend / MPI_Irecv of `bytes` bytes to / from rank + peer_offset, MPI tag = the
//    plan's tag modulo (MPI_TAG_UB + 1).
//  - Alloc / Free: the tensor's bytes are allocated (C allocator) and touched, or freed; the rank's live
//    bytes change and a MemorySample is recorded. A program with a planned arena (Program::arena, the
//    zrdf pass) allocates the arena once, and its tensors live at their planned offsets in it (touched
//    there: an offset past the arena is an out-of-bounds write AddressSanitizer reports); it holds the
//    arena's bytes from the start and its tensors add nothing, as in the simulator. The model state
//    persists from one iteration to the next (src/cpu/tensor_memory.hpp).
//
// Dtype policy: every compute op runs in fp32 whatever its OpCost::dtype (bf16/fp16 ops are not
// emulated: they run the same shape in fp32, so their bytes moved are twice the bf16 figure while
// their FLOPs are the same). Collectives and messages move exactly the plan's bytes.
//
// Scheduling: one thread per rank, an event loop driving the Plan's execution rules as the simulator
// drives them (core/plan_exec.hpp: readiness, FIFO streams, eager sends, spans, memory). An op becomes
// ready when its dependencies are done and, on the FIFO Compute and Collective streams, when the
// previous op of its stream is done.
// Ready Alloc/Free, Send, Recv and Collective ops are posted first (they never block: Sends and Recvs
// are non-blocking, collectives are MPI's non-blocking ones or a schedule advanced round by round with
// MPI_Testall), then at most one ready Compute op runs to completion, then every in-flight request is
// tested; and again. Consequences, documented rather than hidden:
//  - Communication progresses only between compute ops (MPI has no progress thread here), so the
//    overlap of communication with computation is what a single-threaded MPI process gets, and a
//    collective's or message's recorded end is when this rank saw it complete (at most one compute op
//    late).
//  - A Send's dependents are released as soon as it is posted (the plan's Sends are eager: they never
//    wait for the receiver); its span lasts until MPI completes the MPI_Isend, i.e. until the message
//    has left its buffer. A Recv records no span (below).
//  - Collectives of one (group kind, stream) use their own communicator, so that collectives of the
//    same kind on different streams (whose relative order may differ between members) never mix.
//    Members of a group must issue a kind's collectives on the same streams (checked; InvalidArgument).
//
// Spans: one per executed op except Alloc/Free and Recv (a message is drawn once, by its Send, as the
// simulator draws it; a Recv's wait is the receiver's idle time, not communication), on the op's
// stream, kind PlanOp::span; times from std::chrono::steady_clock relative to a
// start taken right after an MPI_Barrier. Ranks on one host share one start (the host's lowest rank
// takes it and broadcasts it; steady_clock is system-wide on Linux), so their times are exactly
// comparable; ranks on different hosts are aligned only to within the barrier's skew. Compute spans carry
// the FLOPs actually executed (the cost's FLOPs × the executed fraction of m, see compute_scale);
// communication spans carry the plan's bytes.
//
// Buffers: allocated once per run (per rank: one compute pool for the largest compute op, one buffer set
// per distinct (stream, group kind, op, bytes) collective, the technique ops' state, and the arena) and
// reused by every op and by the warm-up iterations; the plan's tensors as above. Their total on any rank must fit CpuBackendOptions::memory_budget, or run()
// throws InvalidArgument naming the op and suggesting a smaller model or compute_scale — before any
// communication, on every rank alike (each rank checks every program).
#pragma once

#include <memory>
#include <string>

#include "twinbed/core/backend.hpp"
#include "twinbed/core/plan.hpp"
#include "twinbed/core/trace.hpp"
#include "twinbed/core/units.hpp"

namespace twinbed::real {

// The precision compute ops run in. Only fp32 today (see the header comment).
enum class ComputeDType { FP32 };

struct CpuBackendOptions {
  // "native" (MPI's own collectives) or a registered algorithm (ring, tree, rhd, direct, hierarchical)
  // executed over MPI point-to-point. An algorithm that lacks an op the plan uses is an InvalidArgument.
  std::string collective_algorithm = "native";
  // For "hierarchical": consecutive members of a group that share a host; 0 = one host.
  int ranks_per_host = 0;
  ComputeDType dtype = ComputeDType::FP32;
  // Whole-plan iterations run (untimed, unrecorded) before the recorded one, >= 0: first-touch of
  // buffers, MPI connection set-up.
  int warmup_iters = 1;
  // In (0, 1]: the fraction of each GEMM's rows (m, at least 1) and of each memory-bound op's bytes that
  // is executed, to keep CPU runs of large models short. Spans then carry the FLOPs executed, so the
  // Trace describes the scaled-down run, not the plan. Collectives and messages are never scaled.
  double compute_scale = 1.0;
  // Per rank: the most bytes run() may allocate for compute, collective and message buffers, technique
  // state and the plan's tensors, > 0.
  Bytes memory_budget = 2 * GiB;
  bool operator==(const CpuBackendOptions&) const = default;
};

// The verification of the payloads technique ops exchanged: every rank re-encodes every member's first
// payload; TGC's all-gathered top-k payloads must equal it float by float, its quantised all-reduce must
// lie within the hops' quantisation error of the exact sum of the members' contributions.
struct PayloadCheck {
  std::int64_t floats = 0;  // payload floats compared, over all ranks
  std::int64_t wrong = 0;   // of them, different from the reference encoding
  bool operator==(const PayloadCheck&) const = default;
};

// Throws InvalidArgument (naming the field) for out-of-range options, UnknownName (listing
// real_collective_algorithm_names()) for an unknown algorithm. Needs no MPI.
void validate(const CpuBackendOptions& options);

// Lives inside an MPI job: an MpiSession must exist for the object's whole life, and every rank of
// MPI_COMM_WORLD constructs one and calls run() with the same plan (run() is collective).
// Not thread-safe; use it from the thread that created the MpiSession.
class CpuBackend : public Backend {
 public:
  // Throws as validate(options) does; Error when MPI is not running (no MpiSession); Unavailable when
  // twinbed was built without MPI.
  explicit CpuBackend(CpuBackendOptions options = {});
  ~CpuBackend() override;
  CpuBackend(const CpuBackend&) = delete;
  CpuBackend& operator=(const CpuBackend&) = delete;

  std::string name() const override { return "real-cpu"; }

  // Runs options.warmup_iters unrecorded iterations, then one recorded iteration, of `plan`.
  // Returns on rank 0 the full Trace: every rank's spans (gathered with MPI_Gatherv), ordered by
  // (rank, start), and every rank's memory samples, ordered by (rank, time). On other ranks it returns
  // a Trace with only that rank's own spans and samples. On every rank: backend "real-cpu",
  // world_size, recorded_rank = identity (every rank is measured), names = plan.names, step_time =
  // the latest span end over all ranks (times start at 0 at the aligned start), and resident_peak: each
  // rank's resident-set high-water mark over the first iteration (warm-up or recorded, the one that
  // allocates the model state) above the resident set before it, freed heap memory first returned to the
  // system (empty where Linux's /proc cannot measure it on some rank).
  //
  // Throws, on every rank alike and before communicating: InvalidArgument when the MPI world size differs
  // from plan.world_size() (naming both), when validate(plan) fails, when buffers exceed the memory
  // budget, when the algorithm lacks an op the plan uses, or when group members put a kind's collectives
  // on different streams. Throws Error when MPI fails, or on one rank only when that rank's program
  // cannot go on (a dependency cycle or a plan that deadlocks); its peers then wait, and the caller must
  // end the job (MpiSession::abort_job).
  Trace run(const Plan& plan) override;

  // The payload verification of the last run(), summed over the ranks (the same on every rank). A run
  // with a wrong float throws Error on the rank that saw it, so a returned run has wrong == 0.
  const PayloadCheck& payload_check() const { return payload_check_; }

 private:
  struct Impl;  // communicators kept between runs of plans with the same groups
  CpuBackendOptions options_;
  PayloadCheck payload_check_;
  std::unique_ptr<Impl> impl_;
};

// The driver the CLI calls: CpuBackend(options).run(plan). Assumes an MpiSession exists; same contract.
Trace run_plan_on_cpu(const Plan& plan, const CpuBackendOptions& options);

// The options an experiment gives: its collective algorithm ("auto" runs MPI's own, "native"), the
// rest at their defaults.
CpuBackendOptions cpu_backend_options(const Experiment& experiment);

// Registers the real backends by name: "real-cpu" (a CpuBackend with cpu_backend_options of the setup's
// experiment; made inside an MPI job, as CpuBackend is) and "real-cuda" (add_cuda_backend, cuda_backend.hpp). Present in every build: without MPI, making one
// throws Unavailable saying how to get it.
void add_real_backends(BackendRegistry& registry);

}  // namespace twinbed::real
