// Private to real/src/cuda: the GPU-free half of the CUDA Plan backend (cuda_backend.hpp). It turns one
// rank's program into launches — which CUDA stream each op is enqueued on, what it runs, and which
// other streams' events it must wait for — and the device memory the rank needs. Built and tested in
// every configuration (tests/real/test_cuda_backend.cpp); cuda_backend.cpp only executes what it says.
//
// Streams ("lanes"). Lane 0 is the plan's Compute stream and lane 1 its Collective stream: both FIFO
// in the plan as in CUDA, so program order on them is kept by enqueuing in program order. Collectives
// on the plan's P2P stream (the tensor-parallel ones Megatron issues asynchronously in backward, each
// after the previous: plan.hpp) get one lane of their own, "async collective", overlapping both. Sends and
// Recvs get one lane per direction and peer offset ("send +d", "recv -d"): the plan's P2P ops wait for
// nothing but their dependencies, while NCCL's point-to-point calls block until the peer's matching call
// runs, so a Send and a Recv must never queue behind each other (two ranks each sending first would wait
// forever). Messages of one (sender, receiver) pair match in program order (validate(plan)) as NCCL
// matches them, so the lane of each pair is FIFO without changing the plan's matching. What this adds
// to the plan's rules: a Recv also waits for the earlier Recvs from the same peer, and a Send for the
// earlier Sends to it. The messages sent with peer offset d (and received with -d) share one NCCL
// communicator, p2p_key = d.
//
// Waits. The edges are the execution core's (ExecGraph of plan_exec.hpp: explicit dependencies and FIFO
// successors). An edge between two ops of one lane needs nothing (CUDA's FIFO); an edge from another
// lane is a cudaStreamWaitEvent on the producer's release event: its end, or for a Send — eager in the
// plan, finished when posted — its start (the point its stream reached it, after its own waits).
// Ops are enqueued in program order, a topological order of those edges (every dependency points to an
// earlier op), so every awaited event has been recorded when it is waited on. Technique ops whose
// kernels' twins return a count (host_sync) make the host wait for the device there.
//
// Technique ops: their roles and exchanges found by technique_plan.hpp (as for the CPU backend), their
// GPU state (TgcExchange, DsaLaunch, SparseGemmLaunch) planned here without a GPU; cuda_backend.cpp runs
// them with the twins.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "../technique_plan.hpp"
#include "twinbed/core/passes/tgc.hpp"
#include "twinbed/core/plan.hpp"
#include "twinbed/core/units.hpp"

namespace twinbed::real::cuda_detail {

struct Lane {
  enum class Kind : std::uint8_t { Compute, Collective, AsyncCollective, Send, Recv };
  Kind kind = Kind::Compute;
  int p2p_key = 0;  // Send, Recv: the peer offset the messages are SENT with (Recv lanes: −peer_offset)
  bool operator==(const Lane&) const = default;
};
std::string to_string(const Lane& lane);  // "compute", "collective", "async collective", "send+2", "recv-2"
                                          // (offset of the op)

// The cuBLAS precision a GEMM of `dtype` runs in: FP32, TF32, BF16 and FP16 as they are; FP8 as BF16
// (fp8 GEMMs need cublasLt's scaled matmul, not wired yet: the span keeps the plan's FLOPs).
DType gemm_dtype(DType dtype);

// The technique ops' roles (technique_plan.hpp finds them for every real backend), run with the same
// semantics as the CPU backend's technique_ops.hpp, on the GPU with the kernels' CUDA twins
// (kernels/include/twinbed/kernels/*.hpp, namespace cuda).
using detail::TechniqueRole;

// A TGC exchange of one rank: compress → collective → (requantize) → decompress of one gradient
// reduction, as technique_ops.cpp's Exchange. Sizes in elements / floats.
struct TgcExchange {
  TgcParams params;           // bits, topk_fraction, error_feedback, block_size of the compress op
  std::int64_t n = 0;         // gradient elements
  std::int64_t kept = 0;      // entries sent: k of top-k, or n when dense
  std::int64_t payload_floats = 0;  // real::TgcCodec's payload_floats(bits)
  std::uint32_t name = 0;     // the compress op's name: with the rank, the gradient's identity (seed)
  std::int32_t collective = -1;     // the op index of the collective that follows the compress op
  CollectiveOp op = CollectiveOp::AllGather;
  std::vector<int> members;   // world ranks of the group, in schedule order
  int me = 0;
  std::int64_t hop = 0;       // requantize's elements (0: none)
  // The collective moves the payload itself (NCCL's native all-gather / all-reduce from the exchange's
  // payload buffer into its output buffer); otherwise (a registered schedule) it moves the plan's bytes
  // and the decompress decodes the rank's own payload, as often as it would decode received ones.
  bool carried = false;
  bool sparse() const { return kept < n; }
  std::int64_t output_floats() const {
    return op == CollectiveOp::AllGather ? payload_floats * static_cast<std::int64_t>(members.size()) : payload_floats;
  }
  // Device bytes of its buffers (gradient, residual, payload, output, sum, selection and codes, hop).
  Bytes bytes() const;
  bool operator==(const TgcExchange&) const = default;
};

// DSA's state of one program: the masks of `n` target parameters (all its DSA ops agree on n).
struct DsaLaunch {
  bool present = false;
  std::int64_t n = 0;
  double density = 1;
  OpCost::Sparsity granularity = OpCost::Sparsity::Unstructured;
  std::int64_t block = 0;
  int every = 1;
  Bytes rest_bytes = 0;  // the masked step's other parameters, streamed (masked_step_rest_bytes)
  Bytes bytes() const { return present ? 4 * 5 * n + 2 * n : 0; }
  bool operator==(const DsaLaunch&) const = default;
};

// One distinct sparse GEMM cost: Y (m×n) = X (m×k) · Wᵀ, W n×k masked as BSR b×b blocks at `density`
// or pruned 2:4, run `batch` times. k (and n for BSR) cut to whole blocks / groups of four.
struct SparseGemmLaunch {
  std::int64_t m = 0, n = 0, k = 0, batch = 1;
  bool two_four = false;
  std::int64_t block = 0;
  double density = 1;
  Bytes bytes() const { return 4 * (m * k + 2 * n * k + m * n) + 4 * (n + 1); }
  bool operator==(const SparseGemmLaunch&) const = default;
};

struct OpLaunch {
  enum class Kind : std::uint8_t { Gemm, Stream, Technique, Collective, Send, Recv, Alloc, Free, SendDone };
  Kind kind = Kind::Stream;
  std::uint32_t lane = 0;
  // Gemm: `batch` products C(m×n) = A(m×k)·B(k×n), strided in one pool, in `dtype` (gemm_dtype).
  std::int64_t m = 0, n = 0, k = 0, batch = 0;
  DType dtype = DType::FP32;
  // Stream: a streaming kernel over `bytes` (half read, half written). Collective: the bytes executed
  // (the plan's rounded up to the element rule, collective_data.hpp). Send, Recv: the message. Alloc,
  // Free: the tensor.
  Bytes bytes = 0;
  double flops = 0;  // what the span records (Gemm, Stream)
  // Stand-in: the op's own kernel is not run; a GEMM or stream of its work is (see plan_launches).
  bool stand_in = false;
  // Technique: its role and, for TGC roles, the exchange (LaunchPlan::exchanges), for SparseGemm the
  // GEMM (LaunchPlan::sparse_gemms); `elements` the op's (LossScale, Statistics), `every` its slicing.
  // Collective: index >= 0 when it carries that exchange's payload (TgcExchange::carried).
  TechniqueRole technique = TechniqueRole::None;
  std::int32_t index = -1;
  // Marks ops whose twins synchronise their stream inside the call (top-k of a sparse TGC compress,
  // choose_bits of an adaptive one, the DSA mask selections): the host blocks there, mid-op. The
  // executor adds no wait of its own.
  bool host_sync = false;
  std::int64_t elements = 0;
  int every = 1;
  // Collective.
  CollectiveOp collective = CollectiveOp::AllReduce;
  std::uint32_t comm = 0;  // index into LaunchPlan::comms
  int peer = -1;           // Send, Recv: the peer's rank
  // Alloc, Free: where the tensor lives. Arena: inside the planned arena (nothing to allocate); Resident:
  // allocated before the first iteration and kept (the model state: allocated, never freed); Transient:
  // cudaMallocAsync / cudaFreeAsync on its lane, each iteration.
  enum class Placement : std::uint8_t { Arena, Resident, Transient };
  Placement placement = Placement::Transient;
  std::int32_t tensor = -1;
  // Whether dependents on other lanes wait for this op's start (a Send: eager) instead of its end. A
  // SendDone (nothing launched) waits for its Send's end: its lane goes on once the message is through.
  bool release_at_start = false;
  bool operator==(const OpLaunch&) const = default;
};

// A communicator the rank needs: for collectives, the rank's group of `group` used on plan stream
// `stream` (one NCCL communicator per (stream, group kind), as the CPU backend has one MPI communicator
// each: NCCL matches collectives by their order on a communicator); for messages, key p2p_key.
struct CommKey {
  bool p2p = false;
  StreamKind stream = StreamKind::Compute;
  GroupKind group = GroupKind::Tp;
  int p2p_key = 0;
  bool operator==(const CommKey&) const = default;
  bool operator<(const CommKey& o) const;
};

struct LaunchPlan {
  std::vector<Lane> lanes;         // lanes[0] compute, lanes[1] collective, then P2P lanes by first use
  std::vector<OpLaunch> ops;       // per op of the program
  std::vector<std::uint32_t> wait_begin{0};  // CSR: ops[i] waits for the release events of
  std::vector<std::uint32_t> waits;          // waits[wait_begin[i] .. wait_begin[i+1]), ascending
  std::vector<CommKey> comms;      // the communicators this rank's ops use, sorted
  // Device memory, bytes, per rank: the largest GEMM's A, B and C (all batch elements), the largest
  // streaming op, message buffers (one send buffer, the receives back to back), collective buffers
  // (per distinct collective: input and output), the arena and the resident tensors, and the most
  // transient tensor bytes live at once in program order.
  Bytes gemm_pool = 0, stream_pool = 0, send_buffer = 0, recv_buffers = 0, collective_buffers = 0;
  Bytes arena = 0, resident = 0, transient_peak = 0;
  std::vector<Bytes> recv_offset;  // per op (Recv): its buffer's offset in the receive buffers
  // Per communicator: the bytes of each of its two buffers (input, output), the largest collective on
  // it; its collectives run one after another on one lane, so they share them. 0 for P2P ones.
  std::vector<Bytes> comm_buffer;
  // Technique state, kept across iterations (technique_ops.hpp's): TGC exchanges, DSA's masks, the sparse
  // GEMMs, the loss-scaling and statistics buffers (the largest op's elements), and their device bytes.
  std::vector<TgcExchange> exchanges;
  DsaLaunch dsa;
  std::vector<SparseGemmLaunch> sparse_gemms;
  std::int64_t loss_scale_elements = 0, statistics_elements = 0;
  Bytes technique_bytes = 0;
  bool operator==(const LaunchPlan&) const = default;

  std::uint32_t lane_count() const { return static_cast<std::uint32_t>(lanes.size()); }
  const std::uint32_t* waits_of(std::size_t i) const { return waits.data() + wait_begin[i]; }
  std::size_t num_waits(std::size_t i) const { return wait_begin[i + 1] - wait_begin[i]; }
  Bytes device_bytes() const {
    return gemm_pool + stream_pool + send_buffer + recv_buffers + collective_buffers + arena + resident + transient_peak +
           technique_bytes;
  }
};

// Every communicator a plan's ranks use, in one order all ranks agree on (NCCL creates communicators
// collectively): collective (stream, group kind) pairs of every program, then P2P keys, sorted.
std::vector<CommKey> plan_comms(const Plan& plan);

// Rank `rank`'s launches; `native_collectives`: NCCL's own collectives run (they carry TGC payloads),
// else registered schedules. Throws InvalidArgument for a rank outside the plan, a message larger than
// one NCCL call's count, a decompress / requantize after no compressed collective, or DSA ops of one
// program over different parameter counts (as the CPU backend).
// Op → launch:
//  - Compute with a GEMM or attention cost (OpCost::Kind != MemoryBound) and no technique kernel, or a
//    LoRA adapter GEMM: Gemm of the cost's m, n, k, batch in gemm_dtype(cost.dtype), flops = cost.flops.
//  - DSA's Block / TwoFour sparse GEMMs: Technique SparseGemm (the twins' BSR / 2:4 GEMM over W n×k cut
//    to whole blocks), one SparseGemmLaunch per distinct cost. Where the twin cannot run it — a BSR
//    block that is not a multiple of 16 (the CUDA twin's tile), or no whole block — a dense GEMM of
//    k·density (at least 1), the non-zero work, marked stand_in.
//  - Compute, memory-bound: Stream of cost.bytes.
//  - Compute, a technique kernel (OpCost::kernel Compress, Decompress, MaskRefresh, MaskedStep,
//    LossScale, Precision): Technique of its role (see TechniqueRole), flops = cost.flops.
//  - Collective: on the (stream, group) communicator, bytes rounded up as the CPU backend rounds them;
//    one that carries a TGC payload (native all-gather or all-reduce after a compress op): the payload's
//    bytes (all-gather: every member's), index = the exchange.
//  - Send / Recv: to / from rank + peer_offset on the lane of their direction and offset.
//  - Alloc / Free: placement as above; they run on the op's stream's lane.
LaunchPlan plan_launches(const Plan& plan, int rank, bool native_collectives = true);

}  // namespace twinbed::real::cuda_detail
