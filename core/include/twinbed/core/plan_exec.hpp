// The Plan's execution rules, written once (../shared/DESIGN.md, "Backend"). Every backend drives
// these objects — the simulator (sim/plan_sim.cpp) with its event clock, the CPU backend
// (real/src/cpu/cpu_backend.cpp) with its MPI event loop, the CUDA backend (real/src/cuda/cuda_backend.cpp) — so that a simulated and
// a measured run of one Plan follow the same rules and cannot drift apart. Nothing here owns a clock or
// communicates: a backend says when an op finished; these say what that releases, what is recorded
// and in what order.
//
// The rules (plan.hpp's "Execution semantics", as code):
//  - Readiness. An op is ready when every op it depends on has finished and, on a FIFO stream
//    (Compute, Collective: is_fifo), when the previous op of its program on the same stream has
//    finished. ExecGraph holds those edges; RankCursor counts them down as ops finish.
//  - Eager sends. Alloc, Free and Send finish as soon as they are posted (finishes_when_posted): a
//    Send never waits for its Recv, so what depends on it goes on at once. Its message still takes its
//    time, and its span lasts until the message is through. A SendDone finishes when the message of the
//    Send it names (sent_by) is through: blocking sends, without blocking the P2P stream.
//  - Collectives. Members of one collective instance are matched by (group kind, group index, tag)
//    (CollectiveInstance; tag = the op's sequence number on its communicator kind); it starts when the
//    last member expected arrives (CollectiveMatcher) and finishes on all of them together (each
//    member's span runs from where it posted it, so its wait for the others is part of it; a rank
//    that polls its communication between compute ops sees the end at its next poll). A backend
//    whose transport matches collectives by their order on a (kind, stream) communicator — MPI, NCCL —
//    needs members to put a kind's collectives on the same streams (check_collective_streams).
//  - Representatives. The lowest rank running each program stands for the program (representatives):
//    what the simulator simulates in representative fidelity, what every real rank checks for every
//    program so that all reach one verdict without communicating.
//  - Spans. Every op records one span except Alloc and Free (which record memory), Recv and SendDone (a
//    message is drawn once, by its Send): records_span. A span carries its op (index in the program), the op's
//    stream, kind, name, micro-batch, and bytes (communication) or FLOPs (compute) (span_for). So one
//    Plan gives every backend the same set of spans: the same ops on the same streams. A Trace's spans
//    are in the canonical order of span_before (rank, start, end, stream, name, micro-batch, op),
//    which does not depend on the order same-time events happened to run in.
//  - Memory. Alloc adds the op's bytes to the rank's live bytes, Free subtracts them; a tensor placed
//    in the program's planned arena (Program::arena) adds nothing, the arena being live from the start
//    (memory_at_start, memory_delta). MemoryTimeline keeps one sample per time (the last change at a
//    time wins).
//
// Cost: ExecGraph O((ops + deps) log(ops + deps)) to build; RankCursor O(1) per released edge.
// None of these is thread-safe; each backend run builds its own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include "twinbed/core/hash.hpp"
#include "twinbed/core/plan.hpp"
#include "twinbed/core/trace.hpp"
#include "twinbed/core/units.hpp"

namespace twinbed {

// ---- readiness ---------------------------------------------------------------------------------------

// Compute and Collective streams are FIFO queues; P2P ops wait for nothing but their dependencies.
constexpr bool is_fifo(StreamKind s) { return s != StreamKind::P2P; }

// Ops that finish, releasing their dependents, the moment they are posted: Alloc and Free (they take
// no time) and Send (eager).
constexpr bool finishes_when_posted(OpKind k) { return k == OpKind::Alloc || k == OpKind::Free || k == OpKind::Send; }

// The readiness graph of one program: per node, the nodes its finishing releases (its explicit
// dependents and its successor on its FIFO stream), deduplicated, in CSR form, and how many
// predecessors each node waits for. Nodes are the program's ops, or runs of consecutive ops merged
// into one (the simulator's coarse fidelity): op i belongs to node node_of[i]; node_of must be
// nondecreasing, start at 0 and step by at most 1, and a merged run must sit on one stream.
// Edges inside a node are dropped. Plain value; the program need not outlive it.
class ExecGraph {
 public:
  ExecGraph() = default;
  // One node per op.
  explicit ExecGraph(const Program& program);
  // Merged nodes; throws InvalidArgument when node_of breaks the rule above.
  ExecGraph(const Program& program, const std::vector<std::uint32_t>& node_of);

  std::size_t size() const { return waits_.size(); }
  // Predecessors node i waits for before it is ready.
  std::uint32_t waits(std::uint32_t i) const { return waits_[i]; }
  // The nodes whose wait count node i's finishing decrements, ascending.
  std::span<const std::uint32_t> released_by(std::uint32_t i) const {
    return {next_.data() + next_begin_[i], next_.data() + next_begin_[i + 1]};
  }
  bool operator==(const ExecGraph&) const = default;

 private:
  std::vector<std::uint32_t> waits_;
  std::vector<std::uint32_t> next_begin_{0};
  std::vector<std::uint32_t> next_;
};

// One rank's progress through a graph: which nodes have finished and how many predecessors each
// unfinished node still waits for. Borrows the graph, which must outlive it.
class RankCursor {
 public:
  explicit RankCursor(const ExecGraph& graph);

  // Calls ready(i) for every node that waits for nothing, in program order.
  template <class Ready>
  void start(Ready&& ready) const {
    for (std::uint32_t i = 0; i < waits_.size(); ++i)
      if (waits_[i] == 0) ready(i);
  }
  // Node i has finished: calls ready(j) for each node this makes ready, in ascending order.
  template <class Ready>
  void finish(std::uint32_t i, Ready&& ready) {
    ++finished_count_;
    finished_[i] = 1;
    for (std::uint32_t j : graph_->released_by(i))
      if (--waits_[j] == 0) ready(j);
  }

  bool finished(std::uint32_t i) const { return finished_[i] != 0; }
  // Predecessors node i still waits for (0: ready, started or finished).
  std::uint32_t waiting_for(std::uint32_t i) const { return waits_[i]; }
  std::size_t finished_count() const { return finished_count_; }
  std::size_t size() const { return waits_.size(); }
  bool all_finished() const { return finished_count_ == waits_.size(); }

 private:
  const ExecGraph* graph_;
  std::vector<std::uint32_t> waits_;
  std::vector<char> finished_;
  std::size_t finished_count_ = 0;
};

// ---- collectives ---------------------------------------------------------------------------------------

// Which instance of a collective an op of `rank` joins: the tag-th collective on the rank's
// communicator of kind `group`, identified by that communicator's index in the plan's GroupSet.
struct CollectiveInstance {
  GroupKind group = GroupKind::Tp;
  int group_index = -1;
  std::int64_t tag = 0;
  bool operator==(const CollectiveInstance&) const = default;
};
// Throws InvalidArgument when the op is no collective or the rank is in no group of its kind.
CollectiveInstance collective_instance(const Plan& plan, int rank, const PlanOp& op);

// Members arriving at collective instances, one at a time. Member is the backend's handle of a
// (rank, op) pair.
template <class Member>
class CollectiveMatcher {
 public:
  // Adds `member` to `instance`. When it is the `expected`-th, returns every member in arrival order
  // (and forgets the instance); otherwise returns an empty vector. expected <= 1 completes at once.
  std::vector<Member> arrive(const CollectiveInstance& instance, int expected, Member member) {
    if (expected <= 1) return {std::move(member)};
    std::vector<Member>& members = pending_[instance];
    members.push_back(std::move(member));
    if (static_cast<int>(members.size()) < expected) return {};
    std::vector<Member> out = std::move(members);
    pending_.erase(instance);
    return out;
  }
  // Instances some member reached but not all (non-empty after a run: a deadlock).
  std::size_t pending() const { return pending_.size(); }

 private:
  struct Hash {
    std::size_t operator()(const CollectiveInstance& c) const {
      return hash_combine(hash_combine(static_cast<std::uint64_t>(c.group), static_cast<std::uint64_t>(c.group_index)),
                          static_cast<std::uint64_t>(c.tag));
    }
  };
  std::unordered_map<CollectiveInstance, std::vector<Member>, Hash> pending_;
};

// For transports that match collectives by their order on one communicator per (group kind, stream):
// throws InvalidArgument naming two ranks of one group that put a kind's collectives on different
// streams (or in a different stream order). O(collective ops of the distinct programs · ranks).
void check_collective_streams(const Plan& plan, const std::string& backend);

// ---- representatives -------------------------------------------------------------------------------------

// Per program: the lowest rank running it (-1 for a program no rank runs).
std::vector<int> representatives(const Plan& plan);

// ---- spans ------------------------------------------------------------------------------------------------

// Whether an executed op records a span: every op but Alloc, Free, Recv and SendDone.
constexpr bool records_span(OpKind k) {
  return k != OpKind::Alloc && k != OpKind::Free && k != OpKind::Recv && k != OpKind::SendDone;
}

// The span of op number `index` of `rank`'s program, `op`, run from `start` to `end`: its index, stream,
// kind, name and micro-batch; its bytes when it communicates, `flops` when it computes.
Span span_for(int rank, std::uint32_t index, const PlanOp& op, Time start, Time end, double flops);

// The canonical order of a Trace's spans: (rank, start, end, stream, name, micro-batch, op).
bool span_before(const Span& a, const Span& b);
// Sorts spans into that order; InvalidArgument on a span of negative rank.
void sort_spans(std::vector<Span>& spans);

// ---- memory -----------------------------------------------------------------------------------------------

// Bytes live before the first op: the planned arena, if any.
inline Bytes memory_at_start(const Program& program) { return program.arena.size; }
// What an op changes its rank's live bytes by: +bytes for an Alloc, −bytes for a Free, 0 for a tensor
// placed in the program's arena and for every other op.
Bytes memory_delta(const Program& program, const PlanOp& op);

// One rank's live bytes and the samples a Trace records of them.
class MemoryTimeline {
 public:
  explicit MemoryTimeline(int rank) : rank_(rank) {}
  // The live bytes change by `delta` at `now` (times never decrease). A change at the time of the last
  // sample overwrites it, so each time has one sample: the bytes after everything done at it.
  void change(Time now, Bytes delta) {
    live_ += delta;
    if (!samples_.empty() && samples_.back().time == now) {
      samples_.back().bytes = live_;
    } else {
      samples_.push_back({rank_, now, live_});
    }
  }
  Bytes live() const { return live_; }
  const std::vector<MemorySample>& samples() const { return samples_; }
  std::vector<MemorySample> take() { return std::move(samples_); }

 private:
  int rank_;
  Bytes live_ = 0;
  std::vector<MemorySample> samples_;
};

}  // namespace twinbed
