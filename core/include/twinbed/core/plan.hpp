// Plan: the one intermediate representation both backends execute (../shared/DESIGN.md).
//
// A Plan is, for every rank, a program: a list of ops with explicit dependencies.
//   Compute     a kernel; its cost is an OpCost (model.hpp) in Plan::costs.
//   Collective  a CollectiveOp over one of the executing rank's communicators (tp, dp, pp, ep, or the
//               expert-data-parallel group); `tag` is its sequence number among the rank's collectives
//               on that communicator kind, which is how members' ops are matched.
//   Send/Recv   a point-to-point message to/from `rank + peer_offset`, matched by (src, dst, tag).
//   Alloc/Free  `bytes` of tensor `tensor` (an id unique within the program) become live / dead.
//
// Execution semantics (both backends implement these):
//  - An op is ready when every op it depends on (`deps`, indices of earlier ops of the same program)
//    has finished.
//  - Compute and Collective streams are FIFO queues, as CUDA streams are: an op on one runs after the
//    previous op of the program on the same stream has finished (program order = issue order). Ops on
//    different streams overlap freely. Alloc/Free ops also sit in their stream's queue and take no time.
//  - Send and Recv are asynchronous (isend/irecv): they do not wait for their stream's queue. A Send
//    starts its message when ready; a Recv finishes when it is ready and the message has arrived.
//    Sends are eager (buffered): a Send never waits for its Recv to be posted.
//  - A Collective starts when every member of its group has it ready at the head of its stream, and
//    finishes on every member together.
//
// Sharing: ranks that run the same program share one stored Program (`program_of_rank`). Everything
// in an op is relative to the executing rank (peer offsets, group kinds, not rank numbers), which is
// what makes the sharing possible: GPT-3 175B with PP 16, TP 8, DP 8 stores 16 programs, not 1,024.
//
// Memory: a Program of n ops with d dependencies costs about 40·n + 4·d bytes (CSR dependencies).
// Plans are plain values: copyable, comparable with ==, no pointers into themselves.
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

enum class OpKind : std::uint8_t { Compute, Collective, Send, Recv, Alloc, Free };
// "compute", "collective", "send", "recv", "alloc", "free".
std::string to_string(OpKind k);

// Communicators. Megatron rank order (layout.hpp): rank = (pp_index·dp + dp_index)·tp + tp_index.
//   Tp        the tp consecutive ranks of one (pp, dp) index
//   Dp        the dp ranks of one (pp, tp) index, stride tp (dense-parameter gradients)
//   Ep        ep consecutive dp replicas (stride tp) within a Dp group: the expert all-to-all
//   ExpertDp  the dp/ep ranks of a Dp group holding the same experts, stride tp·ep (expert gradients)
//   Pp        the pp ranks of one (dp, tp) index, stride tp·dp (not used by the builder's
//             collectives; there for passes, e.g. the tied-embedding reduction)
enum class GroupKind : std::uint8_t { Tp, Dp, Pp, Ep, ExpertDp };
inline constexpr int kGroupKinds = 5;
// "tp", "dp", "pp", "ep", "expert_dp".
std::string to_string(GroupKind g);

// What an Alloc/Free is for, so memory can be broken down in reports and ZRDF can plan it.
enum class TensorClass : std::uint8_t { Weights, Grads, Optimizer, Activation, CommBuffer, Workspace };
std::string to_string(TensorClass c);

struct PlanOp {
  OpKind kind = OpKind::Compute;
  StreamKind stream = StreamKind::Compute;
  SpanKind span = SpanKind::Other;           // what a trace records it as
  CollectiveOp collective = CollectiveOp::AllReduce;  // Collective
  GroupKind group = GroupKind::Tp;           // Collective
  TensorClass tensor_class = TensorClass::Activation;  // Alloc/Free
  std::int32_t micro_batch = -1;             // -1: not tied to a micro-batch
  std::uint32_t name = 0;                    // index into Plan::names
  std::int32_t cost = -1;                    // Compute: index into Plan::costs
  std::int32_t peer_offset = 0;              // Send/Recv: peer = executing rank + peer_offset
  std::int32_t tensor = -1;                  // Alloc/Free: tensor id, unique within the program
  std::int64_t tag = 0;                      // Send/Recv: matching tag; Collective: sequence number
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
  std::vector<std::string> names;          // op names, deduplicated ("s3.l17.fc1_fwd", "dp.bucket4")
  std::vector<std::string> program_names;  // per program ("stage3")
  double model_flops = 0;                  // one iteration, all ranks: training_flops(.., Recompute::None)

  int world_size() const { return cluster.ranks; }
  const Program& program(int rank) const { return programs.at(static_cast<std::size_t>(program_of_rank.at(static_cast<std::size_t>(rank)))); }
  const GroupSet& group_set(GroupKind g) const { return groups.at(static_cast<std::size_t>(g)); }
  // The members of `rank`'s communicator of kind g (ascending). Throws InvalidArgument if none.
  const std::vector<int>& group_members(int rank, GroupKind g) const;
  // Number of ops over all ranks (what an unshared plan would store).
  std::int64_t total_ops() const;
  bool operator==(const Plan&) const = default;
};

// Checks a plan's structural sanity and throws InvalidArgument naming the first problems:
//  - sizes agree (program_of_rank, dep_begin, group sets), indices are in range (names, costs),
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
//  - Alloc of weights, gradients and optimizer state (rank_model_state_bytes; under ZeRO-3 the full
//    parameters of a layer are gathered into a buffer before its forward and backward and freed after).
//  - For each micro-batch in the stage's pipeline order (GPipe, 1F1B, interleaved 1F1B — Megatron's
//    order, see plan_builder.cpp): Recv of the input activation (b·s·h·dtype bytes, /tp with sequence
//    parallelism) from the previous stage, embedding on stage 0, per layer the forward ops of model.hpp
//    with 2 TP all-reduces (or, with SP, 2 all-gathers + 2 reduce-scatters), 2 EP all-to-alls per MoE
//    layer, the head on the last stage, Send to the next stage; backward mirrors it with recompute ops
//    first. Activations are allocated at the layer's forward and freed after its backward.
//  - DP gradient reduction in buckets of layout.bucket_bytes on the Collective stream; with
//    overlap_grad_reduce each bucket depends on the last micro-batch's backward ops that complete its
//    gradients; without, all buckets follow the whole backward. ZeRO 0: all-reduce; 1-2: reduce-scatter,
//    then all-gather of the updated parameters after the optimizer step; 3: reduce-scatter.
//  - The optimizer step (a memory-bound op over the rank's optimizer state).
// Cost: O(micro-batches · layers per stage · ops per layer) per stage.
Plan build_plan(const TransformerModel& model, const Layout& layout, const ClusterShape& cluster);

}  // namespace twinbed
