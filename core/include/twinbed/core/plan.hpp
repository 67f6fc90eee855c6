// Plan: the one intermediate representation both backends execute (../shared/DESIGN.md).
//
// A Plan is, for every rank, a program: a list of ops with explicit dependencies.
//   Compute     a kernel; its cost is an OpCost (model.hpp) in Plan::costs.
//   Collective  a CollectiveOp over one of the executing rank's communicators (tp, dp, pp, ep, the
//               expert-data-parallel group, the host-local / cross-host parts of dp, or hybrid
//               sharding's shard and replica groups); `tag` is its
//               sequence number among the rank's collectives on that communicator kind, which is how
//               members' ops are matched.
//   Send/Recv   a point-to-point message to/from `rank + peer_offset`, matched by (src, dst, tag).
//   Alloc/Free  `bytes` of tensor `tensor` (an id unique within the program) become live / dead.
//
// Execution semantics (written once as code in plan_exec.hpp, which every backend drives):
//  - An op is ready when every op it depends on (`deps`, indices of earlier ops of the same program)
//    has finished.
//  - Compute and Collective streams are FIFO queues, as CUDA streams are: an op on one runs after the
//    previous op of the program on the same stream has finished (program order = issue order). Ops on
//    different streams overlap freely. Alloc/Free ops also sit in their stream's queue and take no time.
//  - Send and Recv are asynchronous (isend/irecv): they do not wait for their stream's queue. A Send
//    starts its message when ready; a Recv finishes when it is ready and the message has arrived.
//    Sends are eager (buffered): a Send never waits for its Recv to be posted, and it finishes as soon
//    as it is posted (what depends on it goes on while its message is in flight).
//  - A SendDone waits for a send's message instead: it finishes once the message of the program's
//    latest earlier Send with its peer_offset and tag has gone through (MPI: the send request is
//    complete; a GPU: the send's kernel has ended). On the Compute stream it holds back every compute
//    op after it, as a framework whose host waits on its sends does (Layout::overlap_p2p_comm off).
//  - A Collective starts when every member of its group has it ready at the head of its stream, and
//    finishes on every member together. On the P2P stream, which is no queue, a collective is ready
//    when its dependencies are: the builder puts there the tensor-parallel collectives Megatron issues
//    asynchronously in backward (their own communicator's stream), ordering each after the previous.
//
// Parameters: each Program lists the parameter tensors its ranks hold (`params`: layer, matrix, size,
// whether frozen) and named sets of slices of them (`param_sets`). An op's `params` says which
// parameters it reads, produces gradients of, reduces or updates, and `layer` which transformer layer
// it belongs to, so a technique pass can act on "layer 17's qkv weights" (plan_edit.hpp edits plans).
//
// Memory: Allocs and Frees make the rank's live bytes. A Program may carry an arena (ZRDF, passes/):
// then its tensors live at planned offsets inside one allocation of `arena.size` bytes made at the
// start, and that is the rank's memory.
//
// Sharing: ranks that run the same program share one stored Program (`program_of_rank`). Everything
// in an op is relative to the executing rank (peer offsets, group kinds, not rank numbers), which is
// what makes the sharing possible: GPT-3 175B with PP 16, TP 8, DP 8 stores 16 programs, not 1,024.
//
// Memory of the representation: a Program of n ops with d dependencies costs about 60·n + 4·d bytes
// (a 56-byte PlanOp and a 4-byte dep_begin entry per op, a 4-byte index per dependency: CSR). Plans are plain values: copyable, comparable with ==, no pointers into themselves.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "twinbed/core/layout.hpp"
#include "twinbed/core/model.hpp"
#include "twinbed/core/schedule.hpp"
#include "twinbed/core/trace.hpp"
#include "twinbed/core/units.hpp"

namespace twinbed {

struct ClusterShape {
  int ranks = 0;
  int ranks_per_host = 0;
  bool operator==(const ClusterShape&) const = default;
};

enum class OpKind : std::uint8_t { Compute, Collective, Send, Recv, Alloc, Free, SendDone };
// "compute", "collective", "send", "recv", "alloc", "free", "send_done".
std::string to_string(OpKind k);

// Communicators. Megatron rank order (layout.hpp): rank = ((pp_index·dp + dp_index)·cp + cp_index)·tp +
// tp_index.
//   Tp        the tp consecutive ranks of one (pp, dp, cp) index
//   Dp        the dp·cp ranks of one (pp, tp) index, stride tp (dense-parameter gradients: context
//             ranks hold the same parameters, Megatron's data-parallel group with context parallel)
//   Cp        the cp ranks of one (pp, dp, tp) index, stride tp: context parallelism's key/value
//             all-gather and its gradients' reduce-scatter
//   Ep        ep consecutive members (stride tp) of a Dp group, context ranks folded in (Megatron-Core's
//             MoE parallel folding): the expert all-to-all
//   ExpertDp  the dp·cp/ep members of a Dp group holding the same experts, stride tp·ep (expert gradients)
//   Pp        the pp ranks of one (dp, cp, tp) index, stride tp·cp·dp. No op of the builder or of the
//             passes uses it: pipeline messages are Send/Recv
//   DpIntra   the members of a Dp group on one host (ranks_per_host consecutive ranks per host)
//   DpInter   the members of a Dp group with the same position among their host's members: one per
//             host. DpIntra and DpInter exist when every host holds the same number of each Dp group's
//             members (else every rank is in no group of these kinds); the builder emits nothing on
//             them — hierarchical passes (TGC) do.
//   Embedding the first and the last rank of one Pp group (Megatron's embedding group) when pp > 1;
//             the middle stages' ranks, and every rank when pp == 1, are in none. The builder
//             all-reduces the tied word embedding's gradient on it (build_plan below).
//   ZeroShard   Layout::zero_shards() consecutive members of a Dp group: hybrid-sharded ZeRO-3 gathers
//               and reduce-scatters within it (under plain ZeRO-3 it is the Dp group, and the builder
//               uses Dp)
//   ZeroReplica the members of a Dp group with the same position in their ZeroShard group: one per
//               shard group. Hybrid sharding all-reduces each rank's gradient shard over it.
enum class GroupKind : std::uint8_t { Tp, Dp, Pp, Ep, ExpertDp, DpIntra, DpInter, Embedding, Cp, ZeroShard, ZeroReplica };
inline constexpr int kGroupKinds = 11;
// "tp", "dp", "pp", "ep", "expert_dp", "dp_intra", "dp_inter", "embedding", "cp", "zero_shard",
// "zero_replica".
std::string to_string(GroupKind g);

// What an Alloc/Free is for, so memory can be broken down in reports and ZRDF can plan it.
// Weights, Grads and Optimizer are the model state (model_state_of); TechniqueState is what a technique
// keeps across iterations (TGC's error-feedback residual, DSA's masks).
enum class TensorClass : std::uint8_t { Weights, Grads, Optimizer, Activation, CommBuffer, Workspace, TechniqueState };
std::string to_string(TensorClass c);

// ---- parameters ---------------------------------------------------------------------------------

// Which parameters a tensor holds. Per layer: Qkv, Proj, Fc1, Fc2 (dense FFN) or Router, ExpertFc1,
// ExpertFc2 (MoE; the expert tensors hold all of the rank's local experts), Norms (both LayerNorms).
// Outside the layers: Embedding (word and position embeddings on the first stage; the LM head's weight
// on the last stage, the tied word embedding's copy when pp > 1 or the untied output matrix) and
// FinalNorm. LoraA / LoraB: the two low-rank factors of a LoRA adapter (passes/lora.hpp), `base` naming
// the tensor they adapt.
enum class ParamKind : std::uint8_t { Qkv, Proj, Fc1, Fc2, Router, ExpertFc1, ExpertFc2, Norms, Embedding, FinalNorm, Flat, LoraA, LoraB };
// "qkv", "proj", "fc1", "fc2", "router", "expert_fc1", "expert_fc2", "norms", "embedding",
// "final_norm", "flat", "lora_a", "lora_b"; parse throws UnknownName listing them.
std::string to_string(ParamKind k);
ParamKind parse_param_kind(const std::string& name);
std::vector<std::string> param_kind_names();

// A parameter tensor as one rank of a program holds it: tensor- and expert-parallel sharded as Megatron
// shards it, before any ZeRO sharding (the layout says that).
struct ParamTensor {
  std::int32_t layer = -1;          // global layer index; -1 outside the layers
  ParamKind kind = ParamKind::Qkv;
  std::int64_t elements = 0;        // weights and biases on this rank
  std::int64_t rows = 0, cols = 0;  // the weight matrix W of y = x·Wᵀ on this rank (0 when not a GEMM weight)
  bool row_parallel = false;        // W split over tp along its columns (input), else along its rows (output) or not at all
  bool expert = false;              // expert parameters: reduced over ExpertDp, ZeRO-sharded over dp·cp/ep ranks
  bool trainable = true;            // false: frozen — no gradient, no reduction, no optimizer state
  DType dtype = DType::BF16;        // storage and compute dtype of the weights
  std::int32_t base = -1;           // LoRA factors: index of the tensor they adapt
  bool operator==(const ParamTensor&) const = default;
};

// `elements` of parameter tensor `tensor` (an index into Program::params).
struct ParamSlice {
  std::int32_t tensor = -1;
  std::int64_t elements = 0;
  bool operator==(const ParamSlice&) const = default;
};

// A parameter set's elements: the sum of its slices'.
std::int64_t set_elements(const std::vector<ParamSlice>& set);
// One rank's shard of `set` sharded over `shards` ranks: each slice's share, rounded up (what hybrid
// sharding's all-reduce across the shard groups carries).
std::vector<ParamSlice> shard_of(const std::vector<ParamSlice>& set, int shards);
// Its bytes: each slice's elements × `per_element` of its tensor's dtype in `params` (e.g.
// gradient_bytes_per_element).
Bytes set_bytes(const std::vector<ParamSlice>& set, const std::vector<ParamTensor>& params, Bytes (*per_element)(DType));

// A planned arena (ZRDF): every tensor id of the program with an offset lives at it, inside one
// allocation of `size` bytes live from the program's start; tensor ids without one (offset -1, or beyond
// the vector) are allocated on their own. Empty (size 0): no arena, every Alloc allocates.
// The figures of its planning (passes/zrdf.hpp) travel with it.
struct Arena {
  Bytes size = 0;
  std::vector<Bytes> offset_of_tensor;  // by tensor id; -1: not in the arena
  std::string planner;                  // which planner placed the tensors
  Bytes lower_bound = 0;                // the most bytes live at one point of program order
  Bytes no_reuse = 0;                   // every tensor of the iteration in memory of its own
  Bytes caching_allocator = 0;          // what PyTorch's caching allocator would reserve (memory_plan.hpp)
  bool operator==(const Arena&) const = default;
  bool empty() const { return size == 0 && offset_of_tensor.empty(); }
  Bytes offset(std::int32_t tensor) const {
    return tensor >= 0 && static_cast<std::size_t>(tensor) < offset_of_tensor.size() ? offset_of_tensor[static_cast<std::size_t>(tensor)] : -1;
  }
};

struct PlanOp {
  OpKind kind = OpKind::Compute;
  StreamKind stream = StreamKind::Compute;
  SpanKind span = SpanKind::Other;           // what a trace records it as
  CollectiveOp collective = CollectiveOp::AllReduce;  // Collective
  GroupKind group = GroupKind::Tp;           // Collective
  bool copy_engine = false;                  // Collective: moved by the GPUs' copy engines, holding no
                                             // SMs (Transformer Engine's userbuffers ring exchange,
                                             // Layout::tp_comm_overlap); else NCCL's kernels on SMs
  TensorClass tensor_class = TensorClass::Activation;  // Alloc/Free: what the tensor holds; Collective:
                                             // what it moves (Grads: a gradient reduction, Weights: a
                                             // parameter gather, Activation: tp/ep traffic)
  std::int32_t micro_batch = -1;             // -1: not tied to a micro-batch
  std::uint32_t name = 0;                    // index into Plan::names
  std::int32_t cost = -1;                    // Compute: index into Plan::costs
  std::int32_t peer_offset = 0;              // Send/Recv/SendDone: peer = executing rank + peer_offset
  std::int32_t tensor = -1;                  // Alloc/Free: tensor id, unique within the program
  std::int32_t layer = -1;                   // the transformer layer it belongs to; -1: none
  std::int32_t params = -1;                  // index into Program::param_sets: the parameters it reads,
                                             // differentiates, reduces, updates or allocates; -1: none
  std::int64_t tag = 0;                      // Send/Recv/SendDone: matching tag; Collective: sequence number
  Bytes bytes = 0;                           // Collective (nccl-tests convention, schedule.hpp),
                                             // Send/Recv message, Alloc/Free size
  bool operator==(const PlanOp&) const = default;
};

// One rank's (or one class of ranks') program. Dependencies in CSR form: the deps of op i are
// deps[dep_begin[i] .. dep_begin[i+1]), each an index < i.
struct Program {
  std::vector<PlanOp> ops;
  std::vector<std::uint32_t> dep_begin{0};  // size ops.size() + 1
  std::vector<std::uint32_t> deps;
  std::vector<ParamTensor> params;                  // the parameter tensors this program's ranks hold
  std::vector<std::vector<ParamSlice>> param_sets;  // referenced by PlanOp::params
  Arena arena;                                      // planned memory (ZRDF); empty by default

  std::size_t size() const { return ops.size(); }
  // Appends an op with the given deps (each must be < the new op's index; checked by validate()).
  // Returns its index. Amortised O(1 + deps).
  std::uint32_t add(const PlanOp& op, std::initializer_list<std::uint32_t> op_deps = {});
  std::uint32_t add(const PlanOp& op, const std::vector<std::uint32_t>& op_deps);
  // Adds one more dependency to the most recently added op.
  void add_dep_to_last(std::uint32_t dep);
  std::size_t num_deps(std::size_t i) const { return dep_begin[i + 1] - dep_begin[i]; }
  const std::uint32_t* deps_of(std::size_t i) const { return deps.data() + dep_begin[i]; }
  bool operator==(const Program&) const = default;
};

// A partition of the ranks into communicators of one kind. members[g] lists group g's ranks in
// ascending order; a rank's position in that list is its rank within the collective's schedule.
struct GroupSet {
  std::vector<int> group_of_rank;          // per rank; -1 when the rank is in no group of this kind
  std::vector<std::vector<int>> members;
  bool operator==(const GroupSet&) const = default;
};

struct Plan {
  TransformerModel model;
  Layout layout;
  ClusterShape cluster;
  std::vector<Program> programs;
  std::vector<int> program_of_rank;        // size cluster.ranks
  std::vector<GroupSet> groups;            // indexed by GroupKind, size kGroupKinds
  std::vector<OpCost> costs;               // Compute ops' costs, deduplicated
  std::vector<std::string> names;          // op names, deduplicated ("l17.fc1_fwd", "dp.bucket4")
  std::vector<std::string> program_names;  // per program ("stage3")
  double model_flops = 0;                  // one iteration, all ranks: training_flops(.., Recompute::None)
                                           // of the dense model, whatever passes do (the MFU basis)
  std::vector<std::string> passes;         // names of the technique passes applied, in order

  int world_size() const { return cluster.ranks; }
  const Program& program(int rank) const { return programs.at(static_cast<std::size_t>(program_of_rank.at(static_cast<std::size_t>(rank)))); }
  const GroupSet& group_set(GroupKind g) const { return groups.at(static_cast<std::size_t>(g)); }
  // The members of `rank`'s communicator of kind g (ascending). Throws InvalidArgument if none.
  const std::vector<int>& group_members(int rank, GroupKind g) const;
  // Number of ops over all ranks (what an unshared plan would store).
  std::int64_t total_ops() const;
  // Matmul FLOPs of one iteration over all ranks (GEMM and attention ops of every program times the
  // ranks running it; recomputation and ops added by passes included, element-wise ops not): the
  // work the plan executes, against model_flops, the work the dense model needs.
  double executed_flops() const;
  bool operator==(const Plan&) const = default;
};

// The model-state bytes (parameters, gradients, optimizer state) a rank holds for the parameter tensors
// `params` (a Program's) under the layout's ZeRO stage: trainable tensors as model_state_bytes counts
// them (by dtype, gradients in the layout's grad_dtype; dense ones sharded over dp·cp (Layout::grad_ranks),
// expert ones over dp·cp/ep), frozen tensors their parameters only. Equals rank_model_state_bytes for the builder's programs.
ModelStateBytes model_state_of(const std::vector<ParamTensor>& params, const Layout& layout);
// Parameters the optimizer updates on such a rank: the trainable elements, ZeRO-sharded (stage >= 1)
// the same way.
std::int64_t updated_params_of(const std::vector<ParamTensor>& params, const Layout& layout);
// The gradient bytes of those parameters, each in its own tensor's dtype under the layout's grad_dtype
// (gradient_bytes_per_element(layout, dtype)).
Bytes updated_gradient_bytes_of(const std::vector<ParamTensor>& params, const Layout& layout);

// ---- op construction shared by the builder and the passes -----------------------------------------

// The optimizer step over the parameters of `params` the rank updates under `layout`
// (updated_params_of): one memory-bound op (phase BackwardWeight, FP32).
//  - fused (TransformerModel::fused_optimizer, the default): one Adam pass of 28 bytes per parameter in
//    either precision: with 16-bit weights it reads and writes the FP32 master weight, momentum and
//    variance (24 B), reads the gradient and writes the 16-bit weight (2 + 2 B); in pure FP32 it reads
//    and writes the weight, momentum and variance (24 B) and reads the gradient (4 B).
//  - not fused: the passes of Megatron-LM's mixed-precision step (megatron/optimizer/optimizer.py,
//    Float16OptimizerWithFloat16Params.step, and the grad buffer's zero() before the next iteration):
//    16-bit gradients copied into FP32 main gradients (_copy_model_grads_to_main_grads: g + 4 B; none
//    when the gradients are FP32 already, layout grad_dtype), their norm for clipping
//    (clip_grad_norm_fp32: 4 B read), Adam on the FP32 weights (28 B), the FP32 weights copied into the
//    model's (_copy_main_params_to_model_params: 4 + w B), the gradient buffer zeroed (g B). With
//    BF16 weights and FP32 gradients 42 B, BF16 gradients 46 B; FP32 weights 36 B (norm, Adam, zero).
//    FP16's loss-scale unscale is not counted here: it is the precision pass's loss_scale op.
// 16 FLOPs per parameter (18 with the norm's square and add): AdamW, as Megatron-LM runs it (apex
// FusedAdam with decoupled weight decay), counted with the per-step scalars (1−β₁, 1−β₁ᵗ, η·α, η·λ, ...) made once. Kingma & Ba 2015
// (arXiv:1412.6980) Algorithm 1: m ← β₁·m + (1−β₁)·g 3, v ← β₂·v + (1−β₂)·g² 4, the bias corrections
// m̂ = m/(1−β₁ᵗ) and v̂ = v/(1−β₂ᵗ) 1 each, θ ← θ − α·m̂/(√v̂ + ε) 5 (√, +, ÷, ×, −): 14; Loshchilov &
// Hutter 2019 (arXiv:1711.05101) Algorithm 2's decoupled decay θ ← θ − η·λ·θ: 2 more (×, −).
OpCost optimizer_step_cost(const std::vector<ParamTensor>& params, const Layout& layout, bool fused);
// What a trace records a compute op as: gemm, attention or memory-bound.
SpanKind span_of(const OpCost& cost);
// A Collective op on `group` (fields other than kind, stream, span, op, group and bytes left default:
// the caller sets name, tag, micro-batch, layer and params).
PlanOp collective_op(CollectiveOp what, GroupKind group, Bytes bytes, StreamKind stream);
// An Alloc of tensor id `tensor` (its Free: the same op with kind Free).
PlanOp alloc_op(TensorClass cls, std::int32_t tensor, Bytes bytes, std::uint32_t name, StreamKind stream = StreamKind::Compute);

// Checks a plan's structural sanity and throws InvalidArgument naming the first problems:
//  - sizes agree (program_of_rank, dep_begin, group sets), indices are in range (names, costs,
//    param sets and the tensors they name),
//  - every dependency points to an earlier op of the same program,
//  - Alloc/Free pair up per tensor id (an Alloc before its Free, same bytes, no double alloc),
//  - for every rank, its Sends to rank+d match, one for one in order, Recvs on rank+d from -d with
//    the same tag and bytes (and the reverse), and no peer is outside the world,
//  - for every communicator, all members issue the same sequence of collectives (op, bytes) on it.
// Cost: O(ops over distinct programs · distinct peer programs + ranks). Says nothing of deadlock
// freedom; the simulator reports a deadlock if one occurs.
void validate(const Plan& plan);

// Builds the plan of one training iteration. Throws ConfigError (paths "/layout/...", "/model/...")
// when validate(layout, model, cluster.ranks, cluster.ranks_per_host) rejects the layout.
//
// Per pipeline stage (one Program per stage; all tp·dp ranks of a stage share it):
//  - The stage's parameter tensors (Program::params); ops are tagged with their layer and parameters.
//  - Alloc of weights, gradients and optimizer state (rank_model_state_bytes; under ZeRO-3 the full
//    parameters of a layer are gathered into a buffer before its forward and backward and freed after,
//    each gather once the layer before it in that pass has begun, or in backward with backward_prefetch
//    "post" once it is done, and ahead of that layer's gradient reduce-scatter on the Collective stream).
//  - For each micro-batch in the stage's pipeline order (GPipe, 1F1B, interleaved 1F1B — Megatron's
//    order, see plan_builder.cpp): Recv of the input activation (b·(s/cp)·h·dtype / tp bytes whenever
//    tp > 1: with sequence parallelism the rank's sequence shard, without it a slice the receiver
//    all-gathers over TP) from the previous stage, embedding on stage 0, per layer the forward ops of model.hpp
//    with 2 TP all-reduces (or, with SP, 2 all-gathers + 2 reduce-scatters), 2 EP all-to-alls per MoE
//    layer, the head on the last stage, Send to the next stage; backward mirrors it with recompute ops
//    first. With tp_comm_overlap (layout.hpp) the sequence-parallel all-gathers and reduce-scatters
//    beside QKV, the projection, FC1 and FC2 become chunks of each GEMM along its tokens, interleaved
//    with per-chunk collectives on the P2P stream: tp chunks after tp - 1 ring-exchange steps
//    (copy_engine all-gathers of a shard each), each chunk after its step; or, for the projection's and
//    FC2's forward, 4 chunks each followed by a reduce-scatter of its output, the last of which the op
//    after the GEMM waits for. Activations are allocated at the layer's forward and freed after its
//    backward. Messages
//    and collectives carry the activation dtype (activation_dtype), except an fp8 model's SP
//    all-gathers of what its FP8 GEMMs read (the LayerNorms' outputs, forward and for the weight
//    gradient; the projection's and FC2's output gradients), which carry FP8 as Transformer Engine
//    gathers them.
//  - DP gradient reduction in buckets of layout.bucket_bytes on the Collective stream (gradient_buckets
//    below); with overlap_grad_reduce each bucket depends on the last micro-batch's backward ops that
//    complete its gradients; without, all buckets follow the whole backward. ZeRO 0: all-reduce; 1-2:
//    reduce-scatter, then all-gather of the updated parameters after the optimizer step (with
//    overlap_param_gather: at the start of the program, the last bucket first, each tensor's first
//    forward op depending on the gathers that hold it); 3: reduce-scatter per layer and micro-batch,
//    and of the embedding's, final norm's and head's gradients after the backward that completes them;
//    with hybrid sharding (Layout::zero_shard_ranks) gathers and reduce-scatters over ZeroShard, each
//    reduce-scatter followed on the P2P stream by the all-reduce of the rank's shard over ZeroReplica,
//    each after the previous. The optimizer step waits for ZeRO-3's last micro-batch's reductions.
//  - With pp > 1 and tied embeddings (TransformerModel::tie_embeddings), on the first and the last
//    stage: the all-reduce of the word embedding's gradient (⌈V/tp⌉·h elements, the LM head's copy on
//    the last stage) over the Embedding group, on the
//    Collective stream after the DP reduction and the whole backward, before the optimizer step —
//    Megatron-LM's _allreduce_word_embedding_grads in finalize_model_grads (megatron/core/distributed/
//    finalize_model_grads.py), which runs after finish_grad_sync.
//  - The optimizer step (a memory-bound op over the rank's optimizer state).
// Cost: O(micro-batches · layers per stage · ops per layer) per stage.
Plan build_plan(const TransformerModel& model, const Layout& layout, const ClusterShape& cluster);

// A plan of one data-parallel all-reduce of `elements` gradients of `dtype` over all `cluster.ranks`
// ranks (one program: the gradient buffer, one Flat parameter tensor, and the all-reduce): a gradient
// reduction alone, to time it with and without a pass (tgc) as claims about collectives need.
Plan reduction_plan(const ClusterShape& cluster, std::int64_t elements, DType dtype);

// Gradient buckets as PyTorch DDP forms them: gradients in the order they become ready (`ready`, each
// a tensor's gradient completed by op `op`), packed into buckets of at most bucket_bytes / element_bytes
// elements (at least one); a tensor may straddle buckets. A bucket can start once the op that completed
// its last gradient has run (`ready_op`). Used by the builder and by passes that change which
// parameters are trained.
struct GradientReady {
  std::uint32_t op = 0;
  std::int32_t tensor = -1;
  std::int64_t elements = 0;
};
struct GradientBucket {
  std::uint32_t ready_op = 0;
  std::int64_t elements = 0;
  std::vector<ParamSlice> slices;
  bool operator==(const GradientBucket&) const = default;
};
std::vector<GradientBucket> gradient_buckets(const std::vector<GradientReady>& ready, Bytes bucket_bytes, Bytes element_bytes);

}  // namespace twinbed
