#include "twinbed/sim/plan_sim.hpp"

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <tuple>
#include <unordered_map>

#include "twinbed/core/collective_algorithms.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/hash.hpp"
#include "twinbed/core/plan_exec.hpp"
#include "twinbed/sim/cache_residency.hpp"
#include "twinbed/sim/collective_sim.hpp"
#include "twinbed/sim/core_sharing.hpp"
#include "twinbed/sim/engine.hpp"
#include "twinbed/sim/group_collectives.hpp"
#include "twinbed/sim/link_sharing.hpp"
#include "twinbed/sim/network.hpp"

namespace twinbed::sim {

Fidelity parse_fidelity(const std::string& name) {
  if (name == "full") return Fidelity::Full;
  if (name == "representative") return Fidelity::Representative;
  if (name == "coarse") return Fidelity::Coarse;
  throw UnknownName("fidelity", name, fidelity_names());
}

std::string to_string(Fidelity f) {
  switch (f) {
    case Fidelity::Full: return "full";
    case Fidelity::Representative: return "representative";
    case Fidelity::Coarse: return "coarse";
  }
  return "full";
}

std::vector<std::string> fidelity_names() { return {"full", "representative", "coarse"}; }

PlanSimOptions plan_sim_options(const Experiment& e, const Topology& topology, bool record_spans) {
  PlanSimOptions options;
  options.network = e.simulation.network;
  options.fidelity = parse_fidelity(e.simulation.fidelity);
  options.collective_algorithm = e.simulation.collective_algorithm;
  options.nccl_minor = e.simulation.nccl_minor;
  options.record_spans = record_spans;
  if (!e.cluster.profile.empty()) {
    try {
      options.profile = load_profile(e.cluster.profile, topology.device(0));
    } catch (const ConfigError& err) {
      throw ConfigError("/cluster/profile", std::string("in profile file: ") + err.what());
    }
  }
  return options;
}

namespace {

// A program prepared for execution on one kind of device: durations resolved, optionally coarsened;
// its readiness graph is the shared one (plan_exec.hpp).
struct ExecOp {
  OpKind kind = OpKind::Compute;
  StreamKind stream = StreamKind::Compute;
  SpanKind span = SpanKind::Other;
  GroupKind group = GroupKind::Tp;
  CollectiveOp collective = CollectiveOp::AllReduce;
  bool copy_engine = false;  // Collective: holds no SMs (PlanOp::copy_engine)
  std::int32_t micro_batch = -1;
  std::uint32_t name = 0;
  std::int32_t peer_offset = 0;
  std::int64_t tag = 0;
  Bytes bytes = 0;        // Alloc/Free: the change of live bytes (memory_delta)
  Time duration;          // Compute only
  Time matmul;            // Compute only: the part of `duration` spent in matmul kernels (GEMMs,
                          // attention), which the SMs NCCL holds slow down (contended)
  std::int32_t cost = -1;  // Compute only: the op's cost in Plan::costs (a single op)
  double flops = 0;       // Compute only
  std::uint32_t first = 0;  // the program's op (the first of a merged run)
  // A merged run (Coarse): its ops' (duration, matmul) are ExecProgram::parts[part_begin, part_end);
  // empty for a single op.
  std::uint32_t part_begin = 0, part_end = 0;
};

struct ExecPart {
  Time duration;
  Time matmul;
  std::int32_t cost = -1;
};

struct ExecProgram {
  const Program* program = nullptr;
  std::vector<ExecOp> ops;
  Bytes arena = 0;                        // a planned arena (ZRDF): live from the start
  ExecGraph graph;                        // over ops
  std::vector<ExecPart> parts;            // the ops of merged runs, each run's contiguous
  int sms = 0;                            // the device's SMs (the profile's shape model); 0: a CPU
  ComputeProfile profile;                 // the device's, which times ops beside NCCL's kernels (contended)
  bool polled = false;                    // communication seen to finish only between compute ops
                                          // (CommProgress::Polled); never coarsened then
  std::int64_t original_ops = 0;
  bool waits_on_sends = false;            // it has SendDone ops (blocking pipeline sends)
};

ExecProgram prepare(const Plan& plan, const Program& prog, const ComputeProfile& profile, bool coarse) {
  const std::size_t n = prog.ops.size();
  // Dependents of each op in the original program, to find what may merge.
  std::vector<std::uint32_t> out_degree(n, 0);
  for (std::uint32_t d : prog.deps) ++out_degree[d];

  // map[i]: the exec op that original op i belongs to.
  std::vector<std::uint32_t> map(n);
  ExecProgram ex;
  ex.program = &prog;
  ex.waits_on_sends = std::any_of(prog.ops.begin(), prog.ops.end(), [](const PlanOp& op) { return op.kind == OpKind::SendDone; });
  ex.original_ops = static_cast<std::int64_t>(n);
  ex.arena = memory_at_start(prog);
  ex.ops.reserve(n);
  std::vector<std::optional<Time>> cost_time(plan.costs.size());  // op_time of each cost, once
  for (std::size_t i = 0; i < n; ++i) {
    const PlanOp& op = prog.ops[i];
    // A compute op joins the run of the op just before it when both are Compute ops on the Compute
    // stream, it waits on nothing but that op, and nothing else waits on that op: then nothing can
    // start, end or wait between the two, and running them as one op of summed duration is exact.
    const bool mergeable = coarse && i > 0 && op.kind == OpKind::Compute && op.stream == StreamKind::Compute &&
                           prog.ops[i - 1].kind == OpKind::Compute && prog.ops[i - 1].stream == StreamKind::Compute &&
                           out_degree[i - 1] <= 1 &&
                           (prog.num_deps(i) == 0 || (prog.num_deps(i) == 1 && prog.deps_of(i)[0] == i - 1));
    Time dur;
    Time matmul;
    double flops = 0;
    const std::int32_t cost = op.kind == OpKind::Compute ? op.cost : -1;
    if (op.kind == OpKind::Compute) {
      const OpCost& c = plan.costs.at(static_cast<std::size_t>(op.cost));
      std::optional<Time>& known = cost_time[static_cast<std::size_t>(op.cost)];
      if (!known) known = op_time(c, profile);
      dur = *known;
      if (c.is_matmul()) matmul = dur;
      flops = c.flops;
    }
    if (mergeable) {
      ExecOp& last = ex.ops.back();
      if (last.part_begin == last.part_end) {
        last.part_begin = static_cast<std::uint32_t>(ex.parts.size());
        ex.parts.push_back({last.duration, last.matmul, last.cost});
      }
      ex.parts.push_back({dur, matmul, cost});
      last.part_end = static_cast<std::uint32_t>(ex.parts.size());
      last.duration += dur;
      last.matmul += matmul;
      last.flops += flops;
      if (last.micro_batch != op.micro_batch) last.micro_batch = -1;
      map[i] = static_cast<std::uint32_t>(ex.ops.size() - 1);
      continue;
    }
    ExecOp e;
    e.kind = op.kind;
    e.stream = op.stream;
    e.span = op.span;
    e.group = op.group;
    e.collective = op.collective;
    e.copy_engine = op.copy_engine;
    e.micro_batch = op.micro_batch;
    e.name = op.name;
    e.peer_offset = op.peer_offset;
    e.tag = op.tag;
    e.bytes = op.kind == OpKind::Alloc || op.kind == OpKind::Free ? memory_delta(prog, op) : op.bytes;
    e.duration = dur;
    e.matmul = matmul;
    e.cost = cost;
    e.flops = flops;
    e.first = static_cast<std::uint32_t>(i);
    map[i] = static_cast<std::uint32_t>(ex.ops.size());
    ex.ops.push_back(e);
  }
  // Merged runs are consecutive Compute-stream ops, so `map` is what ExecGraph takes.
  ex.graph = ExecGraph(prog, map);
  ex.sms = profile.shapes.sms;
  ex.profile = profile;
  return ex;
}

// Under polled progress (CommProgress::Polled) a larger message goes by rendezvous: the sender posts
// a request, the receiver matches it in an MPI call and pulls the data (single copy), and only then
// does it move. Open MPI 4.1's shared-memory transport sends messages up to btl_vader_eager_limit =
// 4096 bytes at once and the rest this way (`ompi_info --param btl vader --level 9`: eager_limit 4096,
// single_copy_mechanism cma); the CPU backend's ranks share one host.
constexpr Bytes kMpiEagerLimit = 4096;

// A compute op that starts while NCCL kernels run on its GPU runs on the SMs they leave, and on the
// memory bandwidth their traffic leaves.
//
// SMs. NCCL runs each channel of a collective as one CTA (thread block) for the collective's
// whole duration (NCCL_MIN_CTAS / NCCL_MAX_CTAS, NCCL's environment variables since 2.17, bound "the
// number of CTAs NCCL uses", docs.nvidia.com/deeplearning/nccl/user-guide/docs/env.html), and an NCCL
// CTA holds its SM alone: "NCCL CTAs won't share an SM with compute kernels" (S. Jeaugey, NVIDIA, in
// NVIDIA/nccl issue #689, 2023, answering "NCCL will launch one cuda block per channel ... so one nccl
// block will occupy one SM exclusively?"; he adds that NCCL uses all of an SM's registers and shared
// memory). A cuBLAS GEMM's CTAs each take most of an SM's shared memory, so they cannot share those
// SMs either: the GEMM runs on sms - channels SMs.
// Model: the op timed by the compute model on sms - channels SMs (op_time_on_sms), channels being the
// CTAs of the rank's collectives in flight (capped at sms - 1: at least one SM stays for the GEMM):
// its tiles quantise into waves over the SMs left, so a GEMM of exactly one wave takes two beside any
// collective, as NVIDIA's forum report measured (compute_model.hpp), and one of many waves slows about
// in proportion. A matmul whose time a measurement gives (GEMM samples) slows by sms / (sms -
// channels). Fewer SMs leave memory-bound ops (element-wise, norms, optimizer) as they are: no source
// here says how much bandwidth a few SMs fewer cost them.
// Where the device's GEMMs are persistent kernels (DeviceSpec::persistent_gemm: Hopper's cuBLAS, as many
// CTAs as SMs, each with its share of the tiles), a GEMM is no wave model: its CTAs that find an SM take
// its whole time alone, those that find none (NCCL's CTAs hold min(tiles, sms) − free of them) start
// once SMs are free for them — when the collectives end or the first CTAs do — and take that time
// again, so that beside a collective that outlasts it a large GEMM takes twice its time alone, as
// pytorch/pytorch issue #143988 measured on H100 ("the matmuls take 2x as long"); a collective posted
// while it runs leaves it as it is (its CTAs hold their SMs; that the collective's own kernel then waits
// for SMs, NVIDIA/nccl issue #1431, is not modelled: it starts as posted).
//
// Memory. NCCL's kernels move their data through the GPU's memory, and a compute kernel beside them gets
// what they leave: on an A100-SXM4-80GB, kernels beside an NCCL all-gather measured an element-wise
// kernel 0.05 ms against 0.02 alone, attention 0.33 against 0.18, a GEMM 2.08 against 1.18 (NVIDIA/nccl
// issue #1428, 2024); S. Jeaugey (NVIDIA) there: "Very likely, they're competing for memory bandwidth",
// and "300GB/s needs to be multiplied by at least 2x for memory bandwidth, as we need to store to memory,
// then read back from it. If you add reading from or writing to user data, it can be 3x" (also in
// issue #1433: "You may not compete for SMs but still compete for memory bandwidth"). Model: while a
// collective's data moves (from when its last member posts it until it ends), each member's memory
// carries kNcclMemoryPerLinkByte times its link traffic, the collective's bus bytes (nccl-tests'
// busbw_factor × bytes: what each rank sends and receives) over its time; a copy-engine transfer
// (below) kCopyEngineMemoryPerLinkByte times (a copy reads its source and
// writes its destination: no staging buffer). A compute op then has the memory bandwidth less that
// traffic (op_time_on_sms's memory_share), at least half of it (two streams that both ask for more than
// the memory gives share it; a guard for collectives whose summed rates, each from its time alone,
// exceed what the links let through together). Matmuls slow only where their memory roof binds. NCCL
// slowed in turn by the compute kernel's traffic (issue #1433 measured it) is not modelled.
//
// When the CTAs or the traffic in flight change while an op runs (a collective posted, its data moving,
// ended), change_beside re-times it by its progress: the share of it done so far at the old rate, the
// rest at the new (OpClock). A Coarse merged run is timed part by part with the same clocks, its end
// re-timed when they change during it. Known approximations: progress is linear in time at a given
// rate (a kernel's last, partial wave is not told apart from its full ones); a collective holds its
// CTAs from when the rank posts it (its kernel is launched and waits on its peers) until it ends; its
// memory traffic is its rate alone, where shared links stretch it (link_sharing.hpp); a persistent
// GEMM keeps the memory share of its start. sms 0 (a CPU profile) or no NCCL collective in flight: the
// op's own time, `duration`. A copy-engine collective (PlanOp::copy_engine: Transformer Engine's
// userbuffers ring exchange, whose peer copies run on the copy engines, initialize_ub's use_ce, on by
// default) runs no kernel and holds no SMs.
struct Beside {
  int channels = 0;         // NCCL CTAs of the rank's collectives in flight
  std::int64_t memory = 0;  // bytes per second of their memory traffic while their data moves
  Beside operator+(const Beside& o) const { return {channels + o.channels, memory + o.memory}; }
};

constexpr double kNcclMemoryPerLinkByte = 3;        // issue #1428 (above): store, read back, user data
constexpr double kCopyEngineMemoryPerLinkByte = 2;  // read the source, write the destination

// The memory traffic of `op` on each member of its group of `ranks` while its data moves for `time`.
std::int64_t memory_traffic(const ExecOp& op, int ranks, Time time) {
  if (time <= Time{}) return 0;
  const double per_link_byte = op.copy_engine ? kCopyEngineMemoryPerLinkByte : kNcclMemoryPerLinkByte;
  const double link_bytes = static_cast<double>(op.bytes) * busbw_factor(op.collective, ranks);
  return std::llround(per_link_byte * link_bytes / time.seconds());
}

// The share of the memory bandwidth NCCL's traffic leaves a compute op (above).
double memory_share(const ExecProgram& p, std::int64_t traffic) {
  const BytesPerSec bandwidth = p.profile.memory_bandwidth;
  if (traffic <= 0 || bandwidth <= 0) return 1;
  return 1 - std::min(static_cast<double>(traffic) / bandwidth, 0.5);
}

Time contended(const ExecProgram& p, const std::vector<OpCost>& costs, std::int32_t cost, Time duration, Time matmul,
               const Beside& b) {
  if (p.sms <= 1 || cost < 0) return duration;
  const bool fewer_sms = b.channels > 0 && matmul > Time{};
  const double share = memory_share(p, b.memory);
  if (!fewer_sms && share == 1) return duration;
  const int free_sms = fewer_sms ? p.sms - std::min(b.channels, p.sms - 1) : p.sms;
  return op_time_on_sms(costs[static_cast<std::size_t>(cost)], p.profile, free_sms, share);
}

// A compute op's time on a GPU as NCCL's CTAs and traffic come and go while it runs, begun beside `b`
// (begin_op) and re-timed when it changes (retime): its share done so far at the old rate, the rest at
// the new (contended). A persistent GEMM (compute_model.hpp, persistent_ctas > 0) is timed otherwise:
// its CTAs that find an SM take its whole time alone at its start's memory share (`time`); those that
// find none (`late`) start once enough SMs are free — when the CTAs in flight drop, or when the first
// CTAs end, whichever is sooner — and take that time again; a count that rises meanwhile leaves it as it
// is (its CTAs hold their SMs). `extra`: time that does not depend on the SMs (cold data), part of `time`.
struct OpClock {
  double done = 0;  // the share of `time` gone by `since`
  Time since, time, start, extra;
  int ctas = 0;
  bool late = false;
  Time end() const { return late ? start + time + time : since + Time::from_seconds((1 - done) * time.seconds()); }
};

template <class Op>
OpClock begin_op(const ExecProgram& p, const std::vector<OpCost>& costs, const Op& op, const Beside& b, Time now,
                 Time extra = Time{}) {
  OpClock c;
  c.since = c.start = now;
  c.extra = extra;
  c.ctas = op.cost >= 0 && p.sms > 1 ? persistent_ctas(costs[static_cast<std::size_t>(op.cost)], p.profile.shapes) : 0;
  if (c.ctas > 0) {
    c.time = contended(p, costs, op.cost, op.duration, Time{}, {0, b.memory}) + extra;
    c.late = c.ctas > p.sms - b.channels;
  } else {
    c.time = contended(p, costs, op.cost, op.duration, op.matmul, b) + extra;
  }
  return c;
}

// Re-times `c` now that `b` is in flight; false where nothing changes.
template <class Op>
bool retime(OpClock& c, const ExecProgram& p, const std::vector<OpCost>& costs, const Op& op, const Beside& b,
            Time now) {
  if (c.ctas > 0) {
    if (!c.late || c.ctas > p.sms - b.channels) return false;
    c.late = false;
    c.since = std::min(now, c.start + c.time);
    return true;
  }
  if (p.sms <= 1) return false;
  const Time time = contended(p, costs, op.cost, op.duration, op.matmul, b) + c.extra;
  if (time == c.time) return false;
  if (c.time > Time{}) c.done = std::min(1.0, c.done + (now - c.since).seconds() / c.time.seconds());
  c.since = now;
  c.time = time;
  return true;
}

struct CollKey {
  CollectiveOp op;
  GroupKind group;
  Bytes bytes;
  bool operator<(const CollKey& o) const {
    return std::tie(op, group, bytes) < std::tie(o.op, o.group, o.bytes);
  }
};

// Consecutive members of a group that share a host, when the group is host-aligned; else 1.
int group_ranks_per_host(const std::vector<int>& members, const Topology& topo) {
  const int n = static_cast<int>(members.size());
  int k = 0;
  while (k < n && topo.host_of_rank(members[static_cast<std::size_t>(k)]) == topo.host_of_rank(members[0])) ++k;
  if (n % k != 0) return 1;
  for (int b = 0; b < n; b += k) {
    const int host = topo.host_of_rank(members[static_cast<std::size_t>(b)]);
    for (int i = b; i < b + k; ++i) {
      if (topo.host_of_rank(members[static_cast<std::size_t>(i)]) != host) return 1;
    }
    if (b > 0 && host == topo.host_of_rank(members[static_cast<std::size_t>(b - 1)])) return 1;
  }
  return k;
}

class PlanRun {
 public:
  PlanRun(const Plan& plan, const Topology& topo, const PlanSimOptions& opt, PlanSimStats& stats)
      : plan_(plan), topo_(topo), opt_(opt), stats_(stats), routes_(topo) {}

  Trace run();

 private:
  struct RankState {
    RankState(int r, const ExecProgram& p) : rank(r), prog(&p), cursor(p.graph), memory(r) {}
    int rank = 0;
    const ExecProgram* prog = nullptr;
    RankCursor cursor;
    MemoryTimeline memory;
    Beside beside;  // what NCCL's collectives it has posted that have not ended hold (contended)
    // Polled progress: whether a compute op runs now, and the completions of communication that
    // finished while it ran, seen when it ends (at_poll).
    bool computing = false;
    std::vector<std::function<void()>> at_next_poll;
    bool waking = false;  // sharing cores: it waits for one to see what finished (at_poll)
    // What of its compute pool is still in cache (cache_residency.hpp): where the profile measured
    // how fast the caches lose it (MachineProfile::cache_half_life).
    std::optional<CacheResidency> cache;
    // The merged run (Coarse) running on the Compute stream, if any: its part in progress and that
    // part's clock; `generation` voids superseded completion events.
    struct Run {
      bool active = false;
      std::uint32_t op = 0;
      std::uint32_t part = 0;
      OpClock clock;
      std::uint64_t generation = 0;
      Time start;  // the run's
    } run;
    // The compute ops running on a GPU's streams outside merged runs (not where ranks share cores),
    // each with its clock; `generation` voids superseded completion events.
    struct Single {
      std::uint32_t op = 0;
      OpClock clock;
      std::uint64_t generation = 0;
    };
    std::vector<Single> singles;
    std::uint64_t single_generation = 0;
  };
  struct MsgKey {
    int dst, src;
    std::int64_t tag;
    bool operator==(const MsgKey&) const = default;
  };
  struct MsgHash {
    std::size_t operator()(const MsgKey& k) const {
      return hash_combine(hash_combine(static_cast<std::uint64_t>(k.dst), static_cast<std::uint64_t>(k.src)), static_cast<std::uint64_t>(k.tag));
    }
  };
  // A member of a collective instance: its simulated rank, its op, and when it posted it (its span
  // starts there, as a real backend's does: the wait for the other members is part of it).
  struct Member {
    int si;
    std::uint32_t op;
    Time posted;
  };
  struct Msg {
    bool arrived = false;
    int waiting_rank = -1;  // simulated-rank index of a Recv waiting for it
    std::uint32_t waiting_op = 0;
  };

  void time_collectives();
  bool check_symmetry(std::string& why);
  Time p2p_time(int src, int dst, Bytes bytes);
  const Footprint* collective_footprint(const ExecOp& op, int gid);
  const Footprint* message_footprint(int src, std::int32_t offset, Bytes bytes);
  const Footprint* footprint_of(std::map<std::pair<int, int>, double>& pair_bytes, Footprint& out);
  void start(int si, std::uint32_t op);
  void change_beside(int si, const Beside& delta);
  Time run_end(const RankState& rs) const;
  void schedule_run_end(int si);
  void schedule_single_end(int si, const RankState::Single& op);
  void finish_compute(int si, std::uint32_t i, Time started);
  void complete(int si, std::uint32_t op);
  void at_poll(int si, std::function<void()> seen);
  void give_core_back_if_idle(int si);
  void drain();
  void record(int si, const ExecOp& op, Time start, Time end);
  void memory(int si, Bytes delta);
  void start_cache(RankState& rs);
  Time cold_data(int si, std::uint32_t i, Time now);
  Time alone(Time t) const;
  // A single compute op's cost.
  const OpCost& cost_of(const ExecOp& op) const { return plan_.costs[static_cast<std::size_t>(op.cost)]; }

  const Plan& plan_;
  const Topology& topo_;
  const PlanSimOptions& opt_;
  PlanSimStats& stats_;
  RouteCache routes_;
  Engine engine_;
  std::map<CollKey, std::vector<Time>> coll_time_;        // per group id of the key's kind
  std::map<CollKey, std::string> coll_algorithm_;          // the algorithm each key was timed with
  std::map<CollKey, int> coll_channels_;                   // NCCL's CTAs per rank for each key (0: none)
  // Concurrent communication shares links (link_sharing.hpp); null where it cannot (free
  // communication, a network model that never shares links). Footprints are memoised per simulated
  // instance: (op, kind, group, bytes) of a collective, (src, offset, bytes) of a message.
  std::unique_ptr<LinkSharing> sharing_;
  std::unique_ptr<CoreSharing> cores_;  // PlanSimOptions::shared_cores
  double alone_share_ = 1;              // a profile time's share that a rank alone on a core takes
  std::map<std::tuple<CollectiveOp, GroupKind, int, Bytes>, Footprint> coll_footprint_;
  std::map<std::tuple<int, std::int32_t, Bytes>, Footprint> msg_footprint_;
  std::vector<std::vector<int>> represented_;              // per simulated rank: the ranks it stands for
  std::vector<double> link_scratch_;                       // per link, zero between uses
  std::unordered_map<std::uint64_t, Time> p2p_cache_;
  std::vector<ExecProgram> exec_;                          // per (program, device kind)
  std::vector<RankState> ranks_;                           // simulated ranks
  std::vector<int> sim_index_;                             // per rank: index in ranks_, or -1
  std::vector<int> rep_of_;                                // per rank: the simulated rank standing for it
  std::vector<std::vector<int>> sim_in_group_;             // per kind, per group: simulated members
  std::unordered_map<MsgKey, Msg, MsgHash> msgs_;
  // Sends whose message a SendDone waits for (or that went through before it asked): keyed by
  // (the sender's simulated-rank index, the send's peer offset, its tag).
  std::unordered_map<MsgKey, Msg, MsgHash> sent_;
  using Messages = std::unordered_map<MsgKey, Msg, MsgHash>;
  // A message arrived: the op waiting for it (a Recv, a SendDone) finishes, or it is kept for the op.
  void arrive(Messages& messages, const MsgKey& key) {
    Msg& m = messages[key];
    m.arrived = true;
    if (m.waiting_rank < 0) return;
    const int rank = m.waiting_rank;
    const std::uint32_t op = m.waiting_op;
    messages.erase(key);
    complete(rank, op);
  }
  // Op `i` of simulated rank `si` waits for `key`'s message: finishes now if it has arrived.
  void complete_or_wait(Messages& messages, const MsgKey& key, int si, std::uint32_t i) {
    auto it = messages.find(key);
    if (it != messages.end() && it->second.arrived) {
      messages.erase(it);
      complete(si, i);
      return;
    }
    Msg& m = messages[key];
    m.waiting_rank = si;
    m.waiting_op = i;
  }
  CollectiveMatcher<Member> instances_;
  std::vector<std::pair<int, std::uint32_t>> ready_;       // worklist of ops to start now
  std::vector<std::pair<int, std::uint32_t>> ready_compute_;  // ... its compute ops, started last
  std::vector<Span> spans_;
  Time end_;
};

Time PlanRun::p2p_time(int src, int dst, Bytes bytes) {
  if (opt_.free_communication || src == dst) return Time{};
  const std::uint64_t key = hash_combine(hash_combine(static_cast<std::uint64_t>(src), static_cast<std::uint64_t>(dst)), static_cast<std::uint64_t>(bytes));
  auto it = p2p_cache_.find(key);
  if (it != p2p_cache_.end()) return it->second;
  // A lone flow: what both network models give one message on an idle path.
  const Path& path = routes_.path(src, dst);
  const Time t = topo_.path_latency(path) + transfer_time(bytes, topo_.path_bandwidth(path));
  p2p_cache_.emplace(key, t);
  return t;
}

// Bytes per link of the (src, dst) rank pairs' traffic, as a footprint (links ascending).
const Footprint* PlanRun::footprint_of(std::map<std::pair<int, int>, double>& pair_bytes, Footprint& out) {
  link_scratch_.resize(static_cast<std::size_t>(topo_.num_links()), 0.0);
  std::vector<LinkId> used;
  for (const auto& [pair, bytes] : pair_bytes) {
    if (pair.first == pair.second || bytes <= 0) continue;
    for (LinkId l : routes_.path(pair.first, pair.second)) {
      if (link_scratch_[l] == 0) used.push_back(l);
      link_scratch_[l] += bytes;
    }
  }
  std::sort(used.begin(), used.end());
  for (LinkId l : used) {
    out.push_back({l, link_scratch_[l]});
    link_scratch_[l] = 0;
  }
  return &out;
}

// A collective instance's traffic: its algorithm's schedule (ring or tree as NCCL picked it; NVLS,
// NVLSTree and PAT, which have no schedule of that name, as the ring — each moves about twice the
// buffer through each GPU's links for an all-reduce, once for the others), summed
// over its rounds, on its group and on every group its simulated members stand for.
const Footprint* PlanRun::collective_footprint(const ExecOp& op, int gid) {
  auto [it, fresh] = coll_footprint_.try_emplace({op.collective, op.group, gid, op.bytes});
  if (!fresh) return &it->second;
  const GroupSet& set = plan_.group_set(op.group);
  const std::vector<int>& members = set.members[static_cast<std::size_t>(gid)];
  if (members.size() < 2 || op.bytes <= 0) return &it->second;
  std::string name = coll_algorithm_.at({op.collective, op.group, op.bytes});
  name = name.substr(0, name.find('/'));
  if (!collective_algorithms().find(name)) name = "ring";
  CollectiveRequest req;
  req.op = op.collective;
  req.ranks = static_cast<int>(members.size());
  req.bytes = op.bytes;
  req.ranks_per_host = group_ranks_per_host(members, topo_);
  const std::unique_ptr<Schedule> schedule = build_schedule(name, req);
  std::map<std::pair<int, int>, double> local;  // by the schedule's ranks
  std::vector<Transfer> transfers;
  for (int k = 0; k < schedule->num_rounds(); ++k) {
    schedule->round(k, transfers);
    for (const Transfer& t : transfers) local[{t.src, t.dst}] += static_cast<double>(schedule->chunks()[static_cast<std::size_t>(t.chunk)].bytes);
  }
  std::map<std::pair<int, int>, double> pairs;  // by topology rank, over the copies
  for (const auto& copy : set.members) {
    if (copy.empty() || set.group_of_rank[static_cast<std::size_t>(rep_of_[static_cast<std::size_t>(copy[0])])] != gid) continue;
    for (const auto& [pair, bytes] : local) pairs[{copy[static_cast<std::size_t>(pair.first)], copy[static_cast<std::size_t>(pair.second)]}] += bytes;
  }
  return footprint_of(pairs, it->second);
}

// A message's traffic, and that of the same message of every rank its sender stands for.
const Footprint* PlanRun::message_footprint(int src, std::int32_t offset, Bytes bytes) {
  auto [it, fresh] = msg_footprint_.try_emplace({src, offset, bytes});
  if (!fresh) return &it->second;
  std::map<std::pair<int, int>, double> pairs;
  for (int r : represented_[static_cast<std::size_t>(sim_index_[static_cast<std::size_t>(src)])]) {
    pairs[{r, r + offset}] += static_cast<double>(bytes);
  }
  return footprint_of(pairs, it->second);
}

void PlanRun::time_collectives() {
  // Every distinct (op, kind, bytes) the programs issue, and which programs issue it.
  std::map<CollKey, std::vector<char>> keys;
  for (std::size_t p = 0; p < plan_.programs.size(); ++p) {
    for (const PlanOp& op : plan_.programs[p].ops) {
      if (op.kind != OpKind::Collective) continue;
      auto& users = keys[{op.collective, op.group, op.bytes}];
      users.resize(plan_.programs.size(), 0);
      users[p] = 1;
    }
  }
  if (opt_.free_communication) {
    for (const auto& [key, users] : keys) {
      coll_time_[key].assign(plan_.group_set(key.group).members.size(), Time{});
    }
    return;
  }
  CollectiveSimulator sim(topo_, opt_.network);
  for (const auto& [key, users] : keys) {
    const GroupSet& set = plan_.group_set(key.group);
    // The groups that run it: those whose members run a program that issues it; all at once.
    std::vector<std::vector<int>> groups;
    std::vector<int> ids;
    for (std::size_t g = 0; g < set.members.size(); ++g) {
      const auto& mem = set.members[g];
      if (mem.empty() || !users[static_cast<std::size_t>(plan_.program_of_rank[static_cast<std::size_t>(mem[0])])]) continue;
      groups.push_back(mem);
      ids.push_back(static_cast<int>(g));
    }
    std::vector<Time>& times = coll_time_[key];
    times.assign(set.members.size(), Time{});
    if (groups.empty()) continue;
    CollectiveRequest req;
    req.op = key.op;
    req.ranks = static_cast<int>(groups[0].size());
    req.bytes = key.bytes;
    req.ranks_per_host = group_ranks_per_host(groups[0], topo_);
    GroupTiming t = time_group_collective(req, groups, opt_.collective_algorithm, sim, topo_, opt_.nccl_minor);
    ++stats_.collective_timings;
    coll_algorithm_[key] = t.algorithm;
    coll_channels_[key] = t.channels;
    for (std::size_t i = 0; i < ids.size(); ++i) times[static_cast<std::size_t>(ids[i])] = t.group_time[i];
  }
}

bool PlanRun::check_symmetry(std::string& why) {
  const int world = plan_.world_size();
  const std::vector<int> lowest = representatives(plan_);
  for (int r = 0; r < world; ++r) {
    const int p = plan_.program_of_rank[static_cast<std::size_t>(r)];
    const int rep = lowest[static_cast<std::size_t>(p)];
    if (r == rep) continue;
    if (!(topo_.device(r) == topo_.device(rep))) {
      why = "ranks " + std::to_string(rep) + " and " + std::to_string(r) + " run one program on different devices";
      return false;
    }
  }
  // Point-to-point: every rank of a program must reach the same peer program in the same time as its
  // representative, and the representative's peer must be that program's representative.
  for (std::size_t p = 0; p < plan_.programs.size(); ++p) {
    std::map<std::pair<std::int32_t, Bytes>, bool> seen;
    for (const PlanOp& op : plan_.programs[p].ops) {
      if (op.kind != OpKind::Send) continue;
      if (!seen.emplace(std::make_pair(op.peer_offset, op.bytes), true).second) continue;
      const int rep = lowest[p];
      const int rep_peer = rep + op.peer_offset;
      const int peer_prog = plan_.program_of_rank[static_cast<std::size_t>(rep_peer)];
      if (lowest[static_cast<std::size_t>(peer_prog)] != rep_peer) {
        why = "rank " + std::to_string(rep) + "'s peer " + std::to_string(rep_peer) + " is not its program's lowest rank";
        return false;
      }
      const Time t = p2p_time(rep, rep_peer, op.bytes);
      for (int r = 0; r < world; ++r) {
        if (plan_.program_of_rank[static_cast<std::size_t>(r)] != static_cast<int>(p)) continue;
        const int peer = r + op.peer_offset;
        if (plan_.program_of_rank[static_cast<std::size_t>(peer)] != peer_prog) {
          why = "ranks of program " + std::to_string(p) + " send to different programs";
          return false;
        }
        if (p2p_time(r, peer, op.bytes) != t) {
          why = "message " + std::to_string(r) + "->" + std::to_string(peer) + " takes a different time than " +
                std::to_string(rep) + "->" + std::to_string(rep_peer);
          return false;
        }
      }
    }
  }
  // Collectives: every group that runs a key takes the same time.
  std::vector<std::set<CollKey>> program_keys(plan_.programs.size());  // the keys each program runs
  for (std::size_t p = 0; p < plan_.programs.size(); ++p) {
    for (const PlanOp& op : plan_.programs[p].ops) {
      if (op.kind == OpKind::Collective) program_keys[p].insert(CollKey{op.collective, op.group, op.bytes});
    }
  }
  for (const auto& [key, times] : coll_time_) {
    const GroupSet& set = plan_.group_set(key.group);
    Time first = Time::max();
    for (std::size_t g = 0; g < set.members.size(); ++g) {
      if (set.members[g].empty()) continue;
      const int p = plan_.program_of_rank[static_cast<std::size_t>(set.members[g][0])];
      if (!program_keys[static_cast<std::size_t>(p)].contains(key)) continue;
      if (first == Time::max()) first = times[g];
      if (times[g] != first) {
        why = to_string(key.group) + " " + to_string(key.op) + " of " + std::to_string(key.bytes) +
              " bytes takes different times on different groups";
        return false;
      }
    }
  }
  return true;
}

// The rank's cache as the step before leaves it: a run repeats the step, which ends with the
// optimizer step, the op reaching furthest into the pool on a training rank, so the pool as far as any
// op reaches is taken as touched when the step starts. (Where a larger op runs earlier in the step, this
// takes more to be in cache than is.)
void PlanRun::start_cache(RankState& rs) {
  PoolFootprint whole;
  for (const ExecOp& op : rs.prog->ops) {
    if (op.kind != OpKind::Compute || op.cost < 0) continue;
    const PoolFootprint f = cpu_pool_footprint(cost_of(op));
    whole.input_floats = std::max(whole.input_floats, f.input_floats);
    whole.output_floats = std::max(whole.output_floats, f.output_floats);
  }
  rs.cache.emplace(rs.prog->profile.cache_half_life);
  rs.cache->touch(whole, Time{});
}

// What compute op `i` of rank `si`, starting at `now`, takes beyond its time for the part of its data
// that has left the cache (cache_residency.hpp; zero without the cache model), counted in stats_.
Time PlanRun::cold_data(int si, std::uint32_t i, Time now) {
  const RankState& rs = ranks_[static_cast<std::size_t>(si)];
  if (!rs.cache) return Time{};
  const OpCost& c = cost_of(rs.prog->ops[i]);
  const double cold = rs.cache->cold_bytes(cpu_pool_footprint(c), now);
  const Time extra = cold_data_time(c, rs.prog->profile, cold);
  if (extra > Time{}) {
    stats_.cold_bytes += cold;
    stats_.cold_time += alone(extra);
  }
  return extra;
}

// A profile time as a rank alone on a core takes it (PlanSimOptions::shared_cores).
Time PlanRun::alone(Time t) const { return alone_share_ == 1 ? t : Time::from_seconds(t.seconds() * alone_share_); }

void PlanRun::memory(int si, Bytes delta) { ranks_[static_cast<std::size_t>(si)].memory.change(engine_.now(), delta); }

void PlanRun::record(int si, const ExecOp& op, Time start_time, Time end_time) {
  end_ = std::max(end_, end_time);
  if (!opt_.record_spans) return;
  const RankState& rs = ranks_[static_cast<std::size_t>(si)];
  Span s = span_for(rs.rank, op.first, rs.prog->program->ops[op.first], start_time, end_time, op.flops);
  s.micro_batch = op.micro_batch;  // a merged run's: -1 unless all its ops share one
  spans_.push_back(s);
}

void PlanRun::start(int si, std::uint32_t i) {
  RankState& rs = ranks_[static_cast<std::size_t>(si)];
  const ExecOp& op = rs.prog->ops[i];
  const Time now = engine_.now();
  switch (op.kind) {
    case OpKind::Compute: {
      if (op.part_end - op.part_begin > 1 && rs.prog->sms > 1) {
        // A merged run: each of its ops keeps a clock beside NCCL's kernels from its start (change_beside).
        const ExecPart& first = rs.prog->parts[op.part_begin];
        const OpClock clock = begin_op(*rs.prog, plan_.costs, first, rs.beside, now);
        rs.run = {true, i, op.part_begin, clock, rs.run.generation + 1, now};
        schedule_run_end(si);
        break;
      }
      rs.computing = true;
      if (!cores_ && rs.prog->sms > 1) {
        // A compute op on a GPU: re-timed if NCCL's kernels come or go while it runs (change_beside).
        if ((rs.beside.channels > 0 && op.matmul > Time{}) || rs.beside.memory > 0) ++stats_.contended_ops;
        const Time extra = cold_data(si, i, now);
        const OpClock clock = begin_op(*rs.prog, plan_.costs, op, rs.beside, now, extra);
        rs.singles.push_back({i, clock, ++rs.single_generation});
        schedule_single_end(si, rs.singles.back());
        break;
      }
      // Runs the op once it has its processor: what of its data has left the cache by then costs more.
      const Time dur = contended(*rs.prog, plan_.costs, op.cost, op.duration, op.matmul, rs.beside);
      auto run = [this, si, i, dur]() {
        const Time started = engine_.now();
        const Time t = alone(dur + cold_data(si, i, started));
        engine_.schedule_after(t, [this, si, i, started] { finish_compute(si, i, started); });
      };
      if (cores_) {
        cores_->acquire(si, std::move(run));
      } else {
        run();
      }
      break;
    }
    case OpKind::Alloc:
    case OpKind::Free:
      memory(si, op.bytes);
      break;
    case OpKind::Send: {
      const int peer = rs.rank + op.peer_offset;
      const int dst = rep_of_[static_cast<std::size_t>(peer)];
      const Time dur = p2p_time(rs.rank, dst, op.bytes);
      const int dsi = sim_index_[static_cast<std::size_t>(dst)];
      const std::int64_t tag = op.tag;
      const int src = rs.rank;
      // The sender sees its send done, and the receiver the message, each at its own poll.
      const std::int32_t offset = op.peer_offset;
      auto arrived = [this, si, i, dsi, src, tag, now, offset] {
        at_poll(si, [this, si, i, now, offset, tag] {
          record(si, ranks_[static_cast<std::size_t>(si)].prog->ops[i], now, engine_.now());
          if (ranks_[static_cast<std::size_t>(si)].prog->waits_on_sends) arrive(sent_, {si, offset, tag});
        });
        at_poll(dsi, [this, dsi, src, tag] { arrive(msgs_, {dsi, src, tag}); });
        drain();
      };
      const Footprint* footprint = sharing_ ? message_footprint(rs.rank, op.peer_offset, op.bytes) : nullptr;
      auto transfer = [this, dur, footprint, arrived] {
        if (sharing_) {
          sharing_->start(dur, footprint, arrived);
        } else {
          engine_.schedule_after(dur, arrived);
        }
      };
      // Polled progress: a message above MPI's eager limit goes by rendezvous, its data moving only
      // once the receiver, polling, has matched it.
      if (rs.prog->polled && op.bytes > kMpiEagerLimit) {
        at_poll(dsi, transfer);
      } else {
        transfer();
      }
      break;
    }
    case OpKind::SendDone:  // done when its send's message is through (the send's at_poll above)
      complete_or_wait(sent_, {si, op.peer_offset, op.tag}, si, i);
      break;
    case OpKind::Recv:  // the sender is the representative of rank + offset (itself in Full fidelity)
      complete_or_wait(msgs_, {si, rep_of_[static_cast<std::size_t>(rs.rank + op.peer_offset)], op.tag}, si, i);
      break;
    case OpKind::Collective: {
      const GroupSet& set = plan_.group_set(op.group);
      const int gid = set.group_of_rank[static_cast<std::size_t>(rs.rank)];
      const int expected = sim_in_group_[static_cast<std::size_t>(op.group)][static_cast<std::size_t>(gid)];
      const CollKey key{op.collective, op.group, op.bytes};
      const Time dur = coll_time_.at(key)[static_cast<std::size_t>(gid)];
      // NCCL's kernel holds its CTAs from now until it ends, the copy engines none; its data moves
      // through the members' memory once they all have posted it (contended). An explicit schedule
      // (no channels) is not NCCL's kernel: neither.
      const auto ch = coll_channels_.find(key);
      const bool nccl = ch != coll_channels_.end() && ch->second > 0;
      const int channels = nccl && !op.copy_engine ? ch->second : 0;
      const std::int64_t traffic =
          nccl ? memory_traffic(op, static_cast<int>(set.members[static_cast<std::size_t>(gid)].size()), dur) : 0;
      change_beside(si, {channels, 0});
      auto finish_all = [this, dur, &op, gid, channels, traffic](std::vector<Member> members) {
        for (const Member& m : members) change_beside(m.si, {0, traffic});
        auto done = [this, members = std::move(members), channels, traffic] {
          for (const Member& m : members) {
            change_beside(m.si, {-channels, -traffic});
            at_poll(m.si, [this, m] {
              record(m.si, ranks_[static_cast<std::size_t>(m.si)].prog->ops[m.op], m.posted, engine_.now());
              complete(m.si, m.op);
            });
          }
          drain();
        };
        if (sharing_) {
          sharing_->start(dur, collective_footprint(op, gid), std::move(done));
        } else {
          engine_.schedule_after(dur, std::move(done));
        }
      };
      auto members = instances_.arrive({op.group, gid, op.tag}, expected, {si, i, now});
      if (!members.empty()) finish_all(std::move(members));
      break;
    }
  }
  // Alloc, Free and (eager) Send are done once posted: what depends on a Send goes on while its
  // message flies.
  if (finishes_when_posted(op.kind)) complete(si, i);
}

// When the running merged run of `rs` ends if NCCL's kernels in flight stay as they are: its part in
// progress by its clock, every later part beside rs.beside.
Time PlanRun::run_end(const RankState& rs) const {
  const ExecProgram& p = *rs.prog;
  const ExecOp& op = p.ops[rs.run.op];
  Time t = rs.run.clock.end();
  for (std::uint32_t k = rs.run.part + 1; k < op.part_end; ++k) {
    t = begin_op(p, plan_.costs, p.parts[k], rs.beside, t).end();
  }
  return t;
}

void PlanRun::schedule_run_end(int si) {
  const RankState& rs = ranks_[static_cast<std::size_t>(si)];
  const std::uint32_t i = rs.run.op;
  const std::uint64_t generation = rs.run.generation;
  const Time start_time = rs.run.start;
  engine_.schedule_at(run_end(rs), [this, si, i, generation, start_time] {
    RankState& r = ranks_[static_cast<std::size_t>(si)];
    if (!r.run.active || r.run.generation != generation) return;  // superseded by a re-timing
    r.run.active = false;
    record(si, r.prog->ops[i], start_time, engine_.now());
    complete(si, i);
  });
}

// What NCCL's kernels in flight on the rank hold changes now: every compute op running is re-timed by
// its clock (OpClock), a merged run's part in progress too, once the parts that ended by now have been
// passed (each begun beside what was in flight at its start).
void PlanRun::change_beside(int si, const Beside& delta) {
  RankState& rs = ranks_[static_cast<std::size_t>(si)];
  if (delta.channels == 0 && delta.memory == 0) return;
  const Time now = engine_.now();
  const ExecProgram& p = *rs.prog;
  const Beside beside = rs.beside + delta;
  for (RankState::Single& op : rs.singles) {
    if (!retime(op.clock, p, plan_.costs, p.ops[op.op], beside, now)) continue;
    op.generation = ++rs.single_generation;
    ++stats_.single_retimings;
    schedule_single_end(si, op);
  }
  if (!rs.run.active) {
    rs.beside = beside;
    return;
  }
  const ExecOp& op = p.ops[rs.run.op];
  // Parts that ended by now began beside the old state (a part ending exactly now counts as ended).
  while (rs.run.part + 1 < op.part_end) {
    const Time end = rs.run.clock.end();
    if (end > now) break;
    ++rs.run.part;
    rs.run.clock = begin_op(p, plan_.costs, p.parts[rs.run.part], rs.beside, end);
  }
  retime(rs.run.clock, p, plan_.costs, p.parts[rs.run.part], beside, now);
  rs.beside = beside;
  ++rs.run.generation;
  ++stats_.run_retimings;
  schedule_run_end(si);
}

// When compute op `op` of rank `si` ends if NCCL's kernels in flight stay as they are.
void PlanRun::schedule_single_end(int si, const RankState::Single& op) {
  const std::uint64_t generation = op.generation;
  engine_.schedule_at(op.clock.end(), [this, si, generation] {
    RankState& r = ranks_[static_cast<std::size_t>(si)];
    const auto it = std::find_if(r.singles.begin(), r.singles.end(),
                                 [&](const RankState::Single& s) { return s.generation == generation; });
    if (it == r.singles.end()) return;  // superseded by a re-timing
    const RankState::Single done = *it;
    r.singles.erase(it);
    finish_compute(si, done.op, done.clock.start);
  });
}

// A compute op that started at `started` (when it got its processor: later than it was ready where it
// waited for a core) ends now.
void PlanRun::finish_compute(int si, std::uint32_t i, Time started) {
  RankState& r = ranks_[static_cast<std::size_t>(si)];
  if (r.cache) r.cache->touch(cpu_pool_footprint(cost_of(r.prog->ops[i])), engine_.now());
  record(si, r.prog->ops[i], started, engine_.now());
  // The rank polls: what finished while it computed is seen now, before its next op starts.
  r.computing = false;
  std::vector<std::function<void()>> seen;
  seen.swap(r.at_next_poll);
  for (auto& f : seen) f();
  complete(si, i);
  give_core_back_if_idle(si);
}

// `seen` runs when rank `si` sees a communication finish: now, unless its progress is polled and it
// is inside a compute op, then when that op ends; or, where ranks share cores and it waits without
// one, once it has one again (core_sharing.hpp). It gives the core back unless it computes then.
void PlanRun::at_poll(int si, std::function<void()> seen) {
  RankState& rs = ranks_[static_cast<std::size_t>(si)];
  if (rs.prog->polled && rs.computing) {
    rs.at_next_poll.push_back(std::move(seen));
    return;
  }
  if (!cores_ || cores_->holds(si)) {
    seen();
    return;
  }
  rs.at_next_poll.push_back(std::move(seen));
  if (rs.waking) return;
  rs.waking = true;
  cores_->acquire(si, [this, si] {
    RankState& r = ranks_[static_cast<std::size_t>(si)];
    r.waking = false;
    std::vector<std::function<void()>> seen_now;
    seen_now.swap(r.at_next_poll);
    for (auto& f : seen_now) f();
    drain();
    give_core_back_if_idle(si);
  });
}

// Sharing cores: a rank with nothing to compute now waits for communication and gives its core away.
void PlanRun::give_core_back_if_idle(int si) {
  const RankState& rs = ranks_[static_cast<std::size_t>(si)];
  if (cores_ && !rs.computing && !rs.waking) cores_->release(si);
}

void PlanRun::complete(int si, std::uint32_t i) {
  RankState& rs = ranks_[static_cast<std::size_t>(si)];
  const ExecProgram& p = *rs.prog;
  const ExecOp& op = p.ops[i];
  rs.cursor.finish(i, [this, si](std::uint32_t j) { ready_.emplace_back(si, j); });
  if (op.kind == OpKind::Compute) drain();
}

// Compute ops start after every other op made ready now (and whatever those make ready at once): a
// collective posted at this instant is in flight during a compute op starting at this instant,
// whichever the program issues first (Megatron issues the asynchronous TP backward collective, then
// the weight-gradient GEMM it overlaps), so the compute op must see its CTAs (contended). Starting
// a compute op makes nothing ready at once, so the order changes nothing else.
void PlanRun::drain() {
  while (!ready_.empty() || !ready_compute_.empty()) {
    if (ready_.empty()) {
      auto [si, j] = ready_compute_.back();
      ready_compute_.pop_back();
      start(si, j);
      continue;
    }
    auto [si, j] = ready_.back();
    ready_.pop_back();
    if (ranks_[static_cast<std::size_t>(si)].prog->ops[j].kind == OpKind::Compute) {
      ready_compute_.emplace_back(si, j);
    } else {
      start(si, j);
    }
  }
}

Trace PlanRun::run() {
  const int world = plan_.world_size();
  if (topo_.num_ranks() != world) {
    throw InvalidArgument("simulate_plan: the plan has " + std::to_string(world) + " ranks, the topology " +
                          std::to_string(topo_.num_ranks()));
  }
  network_models().get(opt_.network);  // UnknownName early
  if (opt_.collective_algorithm != "auto") {
    const auto algorithms = collective_algorithms();
    algorithms.get(opt_.collective_algorithm);  // UnknownName listing the algorithms
  }

  time_collectives();

  // Which ranks to simulate.
  std::vector<int> simulated;
  rep_of_.assign(static_cast<std::size_t>(world), 0);
  stats_.fidelity_used = Fidelity::Full;
  if (opt_.fidelity != Fidelity::Full) {
    std::string why;
    if (check_symmetry(why)) {
      stats_.fidelity_used = opt_.fidelity;
      const std::vector<int> lowest = representatives(plan_);
      for (int r = 0; r < world; ++r) {
        const int l = lowest[static_cast<std::size_t>(plan_.program_of_rank[static_cast<std::size_t>(r)])];
        if (l == r) simulated.push_back(r);
        rep_of_[static_cast<std::size_t>(r)] = l;
      }
    } else {
      stats_.fallback_reason = why;
    }
  }
  if (stats_.fidelity_used == Fidelity::Full) {
    simulated.clear();
    for (int r = 0; r < world; ++r) {
      simulated.push_back(r);
      rep_of_[static_cast<std::size_t>(r)] = r;
    }
  }
  stats_.simulated_ranks = static_cast<int>(simulated.size());
  sim_index_.assign(static_cast<std::size_t>(world), -1);
  for (std::size_t i = 0; i < simulated.size(); ++i) sim_index_[static_cast<std::size_t>(simulated[i])] = static_cast<int>(i);
  represented_.assign(simulated.size(), {});
  for (int r = 0; r < world; ++r) {
    represented_[static_cast<std::size_t>(sim_index_[static_cast<std::size_t>(rep_of_[static_cast<std::size_t>(r)])])].push_back(r);
  }
  if (!opt_.free_communication && network_models().get(opt_.network).shares_links) {
    sharing_ = std::make_unique<LinkSharing>(engine_, topo_);
  }
  if (opt_.shared_cores > 0) {
    if (stats_.fidelity_used == Fidelity::Representative)
      throw InvalidArgument("simulate_plan: shared_cores needs every rank simulated (fidelity full or coarse); "
                            "representative simulates one rank per program");
    cores_ = std::make_unique<CoreSharing>(engine_, opt_.shared_cores, static_cast<int>(simulated.size()),
                                           CoreSharing::linux_slice(opt_.shared_cores));
    const int measured_ranks = opt_.profile && opt_.profile->provenance ? opt_.profile->provenance->ranks : 0;
    if (measured_ranks > opt_.shared_cores) alone_share_ = static_cast<double>(opt_.shared_cores) / measured_ranks;
  }
  sim_in_group_.assign(kGroupKinds, {});
  for (int g = 0; g < kGroupKinds; ++g) {
    const GroupSet& set = plan_.groups[static_cast<std::size_t>(g)];
    auto& counts = sim_in_group_[static_cast<std::size_t>(g)];
    counts.assign(set.members.size(), 0);
    for (int r : simulated) {
      const int id = set.group_of_rank[static_cast<std::size_t>(r)];
      if (id >= 0) ++counts[static_cast<std::size_t>(id)];
    }
  }

  // Executable programs, one per (program, device): durations depend on the device.
  std::map<std::pair<int, std::string>, std::size_t> exec_of;
  std::vector<std::size_t> exec_index(simulated.size());
  const bool coarse = stats_.fidelity_used == Fidelity::Coarse;
  exec_.reserve(simulated.size());
  for (std::size_t i = 0; i < simulated.size(); ++i) {
    const int r = simulated[i];
    const int p = plan_.program_of_rank[static_cast<std::size_t>(r)];
    const DeviceSpec& dev = topo_.device(r);
    auto [it, fresh] = exec_of.emplace(std::make_pair(p, dev.name), exec_.size());
    if (fresh) {
      const ComputeProfile prof = opt_.profile ? *opt_.profile : roofline_profile(dev);
      const bool polled = prof.progress == CommProgress::Polled;
      // Merged runs would hide the cache model's gaps between ops; polled programs are never merged.
      exec_.push_back(prepare(plan_, plan_.programs[static_cast<std::size_t>(p)], prof,
                              coarse && !polled && prof.cache_half_life == Time{}));
      exec_.back().polled = polled;
    }
    exec_index[i] = it->second;
  }
  ranks_.reserve(simulated.size());
  for (std::size_t i = 0; i < simulated.size(); ++i) {
    ranks_.emplace_back(simulated[i], exec_[exec_index[i]]);
    RankState& rs = ranks_.back();
    if (rs.prog->profile.cache_half_life > Time{}) start_cache(rs);
    stats_.ops_executed += static_cast<std::int64_t>(rs.prog->ops.size());
    if (rs.prog->arena > 0) memory(static_cast<int>(i), rs.prog->arena);
  }
  if (opt_.record_spans) spans_.reserve(static_cast<std::size_t>(stats_.ops_executed));  // at most one span an op

  // Run: every rank's ops without waits start at time 0.
  for (std::size_t i = 0; i < ranks_.size(); ++i) {
    ranks_[i].cursor.start([this, i](std::uint32_t j) { ready_.emplace_back(static_cast<int>(i), j); });
  }
  std::reverse(ready_.begin(), ready_.end());
  drain();
  engine_.run();
  stats_.events = static_cast<std::int64_t>(engine_.events_run());

  for (const RankState& rs : ranks_) {
    if (rs.cursor.all_finished()) continue;
    std::string msg = "simulate_plan: deadlock on rank " + std::to_string(rs.rank) + ": ops left waiting:";
    int shown = 0;
    for (std::uint32_t j = 0; j < rs.prog->ops.size() && shown < 4; ++j) {
      if (rs.cursor.waiting_for(j) != 0 || rs.cursor.finished(j)) continue;  // started, never finished
      msg += " " + plan_.names[rs.prog->ops[j].name] + "(" + to_string(rs.prog->ops[j].kind) + ")";
      ++shown;
    }
    throw Error(msg);
  }

  Trace trace;
  trace.backend = "sim";
  trace.world_size = world;
  trace.recorded_rank = rep_of_;
  trace.names = plan_.names;
  sort_spans(spans_);  // canonical order, independent of the order same-time events happened to run in
  trace.spans = std::move(spans_);
  for (const RankState& rs : ranks_) {  // ranks_ is in rank order
    trace.memory.insert(trace.memory.end(), rs.memory.samples().begin(), rs.memory.samples().end());
  }
  trace.step_time = end_;
  return trace;
}

}  // namespace

Trace simulate_plan(const Plan& plan, const Topology& topology, const PlanSimOptions& options, PlanSimStats& stats) {
  stats = PlanSimStats{};
  PlanRun run(plan, topology, options, stats);
  return run.run();
}

Trace simulate_plan(const Plan& plan, const Topology& topology, const PlanSimOptions& options) {
  PlanSimStats stats;
  return simulate_plan(plan, topology, options, stats);
}

void add_sim_backend(BackendRegistry& registry) {
  registry.add("sim", "the discrete-event simulator of the experiment's cluster", [](const BackendSetup& setup) {
    return std::make_unique<SimBackend>(*setup.topology,
                                        plan_sim_options(*setup.experiment, *setup.topology, setup.record_spans));
  });
}

}  // namespace twinbed::sim
