#include "twinbed/real/cpu_backend.hpp"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "cpu_compute.hpp"
#include "schedule_executor.hpp"
#include "technique_ops.hpp"
#include "../mpi_gather.hpp"
#include "../trace_packing.hpp"
#include "tensor_memory.hpp"
#include "twinbed/core/collective_algorithms.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/plan_exec.hpp"
#include "twinbed/real/collective_data.hpp"
#include "twinbed/real/collectives.hpp"
#include "twinbed/real/mpi.hpp"
#include "twinbed/real/resident_memory.hpp"

namespace twinbed::real {
namespace {

using Clock = std::chrono::steady_clock;

// An owned communicator. MPI_Comm_free may fail only on a broken job; a destructor has nobody to tell.
class Comm {
 public:
  Comm() = default;
  explicit Comm(MPI_Comm c) : comm_(c) {}
  ~Comm() {
    if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
  }
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;
  MPI_Comm get() const { return comm_; }
  // Takes ownership of `c`; the object must be empty.
  void adopt(MPI_Comm c) { comm_ = c; }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
};

// (stream, group kind): one communicator each, see the header.
using CommKey = std::pair<StreamKind, GroupKind>;

struct CollKey {
  StreamKind stream;
  GroupKind group;
  CollectiveOp op;
  Bytes bytes;        // executed
  int wire_bits = 0;  // a quantised reduction (TGC): its transfers' bits and block, else 0
  std::int64_t wire_block = 0;
  bool operator<(const CollKey& o) const {
    return std::tie(stream, group, op, bytes, wire_bits, wire_block) <
           std::tie(o.stream, o.group, o.op, o.bytes, o.wire_bits, o.wire_block);
  }
};

// A quantised reduction runs over its decoded values (technique_ops.hpp), whatever the plan's bytes.
CollKey key_of(const Plan& plan, int rank, const PlanOp& op,
               const std::optional<detail::TechniqueOps::QuantisedReduction>& quantised = std::nullopt) {
  const int n = static_cast<int>(plan.group_members(rank, op.group).size());
  // Sizes the element rule (collective_data.hpp) rejects are rounded up to it.
  if (quantised)
    return {op.stream, op.group, op.collective, round_up_to_unit(op.collective, n, 4 * quantised->elements),
            quantised->spec.bits, static_cast<std::int64_t>(quantised->spec.block)};
  return {op.stream, op.group, op.collective, round_up_to_unit(op.collective, n, op.bytes)};
}

// ---- per-rank resources of one plan ----------------------------------------------------------------

// The buffers and executor of one (stream, kind, op, executed bytes) collective of this rank; at most
// one instance is in flight at a time, since its stream is a FIFO queue.
class CollectiveSlot {
 public:
  CollectiveSlot(const CollKey& key, MPI_Comm comm, int n, const Schedule* schedule)
      : op_(key.op), comm_(comm), n_(n), request_shape_{key.op, n, key.bytes, 0, 0} {
    std::optional<kernels::QuantSpec> wire;
    if (key.wire_bits > 0) wire = kernels::QuantSpec{key.wire_bits, static_cast<std::size_t>(key.wire_block)};
    const std::int64_t floats = key.bytes / 4;
    const std::string what = to_string(key.op) + " of " + std::to_string(key.bytes) + " bytes";
    count_ = detail::as_count(floats, what);
    block_ = detail::as_count(floats / n, what);
    if (schedule != nullptr) {
      int me = 0;
      MPI_CHECK(MPI_Comm_rank(comm, &me));
      me_ = me;
      program_ = std::make_unique<detail::RankProgram>(*schedule, me, wire);
      workspace_.assign(static_cast<std::size_t>(program_->workspace_floats()), 0.0f);
      return;
    }
    MPI_CHECK(MPI_Comm_rank(comm, &me_));
    // Zeros: sums stay zero however often the buffers are reused, and MPI's time does not depend on values.
    const bool single_input = op_ == CollectiveOp::AllGather;
    const bool single_output = op_ == CollectiveOp::ReduceScatter;
    send_.assign(static_cast<std::size_t>(single_input ? block_ : count_), 0.0f);
    recv_.assign(static_cast<std::size_t>(single_output ? block_ : count_), 0.0f);
  }

  // Posts this rank's part. A group of one rank has nothing to do.
  void start() {
    if (n_ == 1) return;
    if (program_) {
      program_->start(comm_, workspace_);
      return;
    }
    float* s = send_.data();
    float* r = recv_.data();
    switch (op_) {
      case CollectiveOp::AllReduce:
        MPI_CHECK(MPI_Iallreduce(s, r, count_, MPI_FLOAT, MPI_SUM, comm_, &request_));
        break;
      case CollectiveOp::ReduceScatter:
        MPI_CHECK(MPI_Ireduce_scatter_block(s, r, block_, MPI_FLOAT, MPI_SUM, comm_, &request_));
        break;
      case CollectiveOp::AllGather:
        MPI_CHECK(MPI_Iallgather(s, block_, MPI_FLOAT, r, block_, MPI_FLOAT, comm_, &request_));
        break;
      case CollectiveOp::Broadcast:
        MPI_CHECK(MPI_Ibcast(r, count_, MPI_FLOAT, 0, comm_, &request_));
        break;
      case CollectiveOp::Reduce:
        MPI_CHECK(MPI_Ireduce(s, r, count_, MPI_FLOAT, MPI_SUM, 0, comm_, &request_));
        break;
      case CollectiveOp::AllToAll:
        MPI_CHECK(MPI_Ialltoall(s, block_, MPI_FLOAT, r, block_, MPI_FLOAT, comm_, &request_));
        break;
    }
  }

  // Data in and out, for collectives that carry a technique's payload (TGC): `in` is what this rank
  // contributes (all-gather: its block; all-reduce, reduce-scatter: the whole array), `out` what it
  // receives (all-gather, all-reduce: the whole array; reduce-scatter: its block). Floats past the end of
  // `in` are zero; `out` takes what fits. Other ops: InvalidArgument.
  void load(std::span<const float> in) {
    check_data_op();
    auto from = [&](std::int64_t at) { return at < static_cast<std::int64_t>(in.size()) ? in[static_cast<std::size_t>(at)] : 0.0f; };
    if (!program_) {
      for (std::size_t i = 0; i < send_.size(); ++i) send_[i] = from(static_cast<std::int64_t>(i));
      return;
    }
    for (const ChunkElements& c : program_->layout()) {
      if (!holds_at_start(request_shape_, me_, c.block)) continue;
      const std::int64_t base = op_ == CollectiveOp::AllGather ? c.first : c.block * block_ + c.first;
      for (std::int64_t i = 0; i < c.count; ++i) workspace_[static_cast<std::size_t>(c.offset + i)] = from(base + i);
    }
  }
  void unload(std::span<float> out) const {
    check_data_op();
    auto to = [&](std::int64_t at, float v) {
      if (at < static_cast<std::int64_t>(out.size())) out[static_cast<std::size_t>(at)] = v;
    };
    if (n_ == 1 && !program_) {  // nothing ran: what this rank put in is the result
      for (std::size_t i = 0; i < send_.size(); ++i) to(static_cast<std::int64_t>(i), send_[i]);
      return;
    }
    if (!program_) {
      for (std::size_t i = 0; i < recv_.size(); ++i) to(static_cast<std::int64_t>(i), recv_[i]);
      return;
    }
    for (const ChunkElements& c : program_->layout()) {
      if (!checked_at_end(request_shape_, me_, c.block)) continue;
      const std::int64_t base = op_ == CollectiveOp::ReduceScatter ? c.first : c.block * block_ + c.first;
      for (std::int64_t i = 0; i < c.count; ++i) to(base + i, workspace_[static_cast<std::size_t>(c.offset + i)]);
    }
  }

  bool test() {
    if (n_ == 1) return true;
    if (program_) return program_->test(comm_, workspace_);
    int done = 0;
    MPI_CHECK(MPI_Test(&request_, &done, MPI_STATUS_IGNORE));
    return done != 0;
  }

 private:
  void check_data_op() const {
    if (op_ != CollectiveOp::AllGather && op_ != CollectiveOp::AllReduce && op_ != CollectiveOp::ReduceScatter)
      throw InvalidArgument("CPU backend: a " + to_string(op_) + " cannot carry a technique's payload");
  }

  CollectiveOp op_;
  MPI_Comm comm_;
  int n_;
  int me_ = 0;                       // this rank's position in the communicator
  CollectiveRequest request_shape_;  // for the schedule's start and end states (collective_data.hpp)
  int count_ = 0;  // floats of the whole buffer
  int block_ = 0;  // floats of one rank's block
  std::vector<float> send_, recv_;
  MPI_Request request_ = MPI_REQUEST_NULL;
  std::unique_ptr<detail::RankProgram> program_;
  std::vector<float> workspace_;
};

// One rank's program prepared for execution: its readiness graph (plan_exec.hpp), scaled compute
// shapes, buffers. Built once per run(), reused by every iteration.
struct PreparedProgram {
  const Program* prog = nullptr;
  ExecGraph graph;
  std::vector<detail::ScaledCompute> compute;   // per op (Compute ops only)
  std::vector<CollectiveSlot*> slot;            // per op (Collective ops only)
  std::vector<std::int64_t> recv_offset;        // per op (Recv ops): offset in the receive arena
  std::unique_ptr<detail::TechniqueOps> techniques;  // the technique passes' ops (technique_ops.hpp)
  std::unique_ptr<detail::TensorMemory> tensors;     // the Alloc/Free ops' memory (tensor_memory.hpp)
};

// What one rank records in one iteration.
struct RankRecord {
  std::vector<Span> spans;
  std::vector<MemorySample> memory;
};


}  // namespace

// ---- the backend ------------------------------------------------------------------------------------

struct CpuBackend::Impl {
  Comm world;  // private duplicate of MPI_COMM_WORLD: point-to-point messages and our own collectives
  Comm node;   // ranks sharing this host (MPI_COMM_TYPE_SHARED): they share one clock origin
  int rank = 0;
  int size = 1;
  int tag_ub = 32767;
  // Group communicators, kept while plans come with the same groups.
  std::vector<GroupSet> comm_groups;
  std::map<CommKey, std::unique_ptr<Comm>> comms;

  MPI_Comm comm_for(const Plan& plan, CommKey key);
  RankRecord execute(PreparedProgram& pp, std::vector<char>& recv_arena, const std::vector<char>& send_buf,
                     detail::ComputePool& pool, Clock::time_point t0, bool record);
};

MPI_Comm CpuBackend::Impl::comm_for(const Plan& plan, CommKey key) {
  auto it = comms.find(key);
  if (it != comms.end()) return it->second->get();
  const GroupSet& set = plan.group_set(key.second);
  const int group = set.group_of_rank.at(static_cast<std::size_t>(rank));
  MPI_Comm c = MPI_COMM_NULL;
  // key = world rank: positions in the new communicator follow members' ascending order, which is each
  // member's rank within a schedule.
  MPI_CHECK(MPI_Comm_split(world.get(), group < 0 ? MPI_UNDEFINED : group, rank, &c));
  return comms.emplace(key, std::make_unique<Comm>(c)).first->second->get();
}

CpuBackend::CpuBackend(CpuBackendOptions options) : options_(std::move(options)), impl_(std::make_unique<Impl>()) {
  validate(options_);
  impl_->size = detail::world_size();
  MPI_Comm c = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &c));
  impl_->world.adopt(c);
  MPI_CHECK(MPI_Comm_rank(c, &impl_->rank));
  MPI_Comm node = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_split_type(c, MPI_COMM_TYPE_SHARED, impl_->rank, MPI_INFO_NULL, &node));
  impl_->node.adopt(node);
  void* attr = nullptr;
  int found = 0;
  MPI_CHECK(MPI_Comm_get_attr(c, MPI_TAG_UB, &attr, &found));
  if (found && attr != nullptr) impl_->tag_ub = *static_cast<int*>(attr);
}

CpuBackend::~CpuBackend() = default;

RankRecord CpuBackend::Impl::execute(PreparedProgram& pp, std::vector<char>& recv_arena,
                                     const std::vector<char>& send_buf, detail::ComputePool& pool,
                                     Clock::time_point t0, bool record) {
  const Program& prog = *pp.prog;
  const std::size_t n = prog.size();
  const MPI_Comm p2p = world.get();
  auto now = [t0] {
    return Time::ps(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count() * 1000);
  };
  RankRecord rec;
  // A planned arena (zrdf) is live from the start, and the tensors placed in it add nothing.
  MemoryTimeline memory(rank);
  if (memory_at_start(prog) > 0) memory.change(now(), memory_at_start(prog));
  auto span = [&](std::uint32_t i, Time start, Time end, double flops) {
    if (record && records_span(prog.ops[i].kind)) rec.spans.push_back(span_for(rank, i, prog.ops[i], start, end, flops));
  };

  RankCursor cursor(pp.graph);
  std::vector<std::uint32_t> ready;          // non-compute ops ready to post
  std::deque<std::uint32_t> compute_ready;   // compute ops ready to run, in readiness order
  auto push_ready = [&](std::uint32_t j) {
    if (prog.ops[j].kind == OpKind::Compute) compute_ready.push_back(j); else ready.push_back(j);
  };
  auto complete = [&](std::uint32_t i) { cursor.finish(i, push_ready); };
  cursor.start(push_ready);
  std::reverse(ready.begin(), ready.end());  // post in program order

  struct InFlight {
    std::uint32_t op;
    Time start;
    MPI_Request request;      // Send / Recv
    CollectiveSlot* slot;     // Collective
    bool released;            // dependents already released (Sends)
    std::int64_t done_op = -1;  // Send: a SendDone waiting for its message
  };
  std::vector<InFlight> inflight;
  // A SendDone finishes when its Send's request completes: at once when that has happened already.
  auto wait_for_send = [&](std::uint32_t i) {
    const PlanOp& op = prog.ops[i];
    for (InFlight& f : inflight) {
      const PlanOp& s = prog.ops[f.op];
      if (s.kind == OpKind::Send && s.peer_offset == op.peer_offset && s.tag == op.tag) {
        f.done_op = i;
        return;
      }
    }
    complete(i);
  };
  auto mpi_tag = [this](std::int64_t tag) {
    const std::int64_t space = static_cast<std::int64_t>(tag_ub) + 1;
    return static_cast<int>(((tag % space) + space) % space);
  };

  while (!cursor.all_finished() || !inflight.empty()) {
    // 1. Post everything that does not compute: none of it blocks.
    while (!ready.empty()) {
      const std::uint32_t i = ready.back();
      ready.pop_back();
      const PlanOp& op = prog.ops[i];
      switch (op.kind) {
        case OpKind::Alloc:
        case OpKind::Free:
          pp.tensors->apply(op);
          memory.change(now(), memory_delta(prog, op));
          break;
        case OpKind::Send: {
          InFlight f{i, now(), MPI_REQUEST_NULL, nullptr, true};
          // Eager semantics: the buffer is ours until MPI is done with it, so the program goes on now.
          MPI_CHECK(MPI_Isend(send_buf.data(), static_cast<int>(op.bytes), MPI_BYTE, rank + op.peer_offset,
                              mpi_tag(op.tag), p2p, &f.request));
          inflight.push_back(f);
          break;
        }
        case OpKind::SendDone:
          wait_for_send(i);
          break;
        case OpKind::Recv: {
          InFlight f{i, now(), MPI_REQUEST_NULL, nullptr, false};
          MPI_CHECK(MPI_Irecv(recv_arena.data() + pp.recv_offset[i], static_cast<int>(op.bytes), MPI_BYTE,
                              rank + op.peer_offset, mpi_tag(op.tag), p2p, &f.request));
          inflight.push_back(f);
          break;
        }
        case OpKind::Collective: {
          InFlight f{i, now(), MPI_REQUEST_NULL, pp.slot[i], false};
          if (const auto in = pp.techniques->collective_input(i); !in.empty()) f.slot->load(in);
          f.slot->start();
          inflight.push_back(f);
          break;
        }
        case OpKind::Compute:
          break;  // never queued here
      }
      if (finishes_when_posted(op.kind)) complete(i);
    }
    // 2. Progress what is in flight; completions release their dependents.
    for (std::size_t k = 0; k < inflight.size();) {
      InFlight& f = inflight[k];
      bool done = false;
      if (f.slot != nullptr) {
        done = f.slot->test();
      } else {
        int flag = 0;
        MPI_CHECK(MPI_Test(&f.request, &flag, MPI_STATUS_IGNORE));
        done = flag != 0;
      }
      if (!done) {
        ++k;
        continue;
      }
      if (f.slot != nullptr)
        if (const auto out = pp.techniques->collective_output(f.op); !out.empty()) f.slot->unload(out);
      span(f.op, f.start, now(), 0);  // a Recv records none (records_span)
      if (!f.released) complete(f.op);
      if (f.done_op >= 0) complete(static_cast<std::uint32_t>(f.done_op));
      inflight[k] = inflight.back();
      inflight.pop_back();
    }
    if (!ready.empty()) continue;
    // 3. One compute op, to completion.
    if (!compute_ready.empty()) {
      const std::uint32_t i = compute_ready.front();
      compute_ready.pop_front();
      const Time start = now();
      if (pp.techniques->runs(i)) {
        if (const auto rest = pp.techniques->run(i)) pool.run(*rest);
        span(i, start, now(), pp.techniques->flops(i));
      } else {
        pool.run(pp.compute[i]);
        span(i, start, now(), pp.compute[i].flops);
      }
      complete(i);
      continue;
    }
    if (inflight.empty() && !cursor.all_finished()) {
      std::string msg = "CPU backend: rank " + std::to_string(rank) + " cannot go on: " +
                        std::to_string(n - cursor.finished_count()) + " ops wait on each other (a dependency cycle?), e.g.";
      int shown = 0;
      for (std::uint32_t j = 0; j < n && shown < 4; ++j) {
        if (cursor.waiting_for(j) == 0) continue;
        msg += " op " + std::to_string(j) + " (" + to_string(prog.ops[j].kind) + ")";
        ++shown;
      }
      throw Error(msg);
    }
  }
  pp.techniques->next_iteration();
  pp.tensors->next_iteration();
  if (record) rec.memory = memory.take();
  return rec;
}

Trace CpuBackend::run(const Plan& plan) {
  Impl& im = *impl_;
  // ---- checks: every rank checks every program, so all reach the same verdict before communicating.
  if (plan.world_size() != im.size)
    throw InvalidArgument("the plan is for " + std::to_string(plan.world_size()) + " ranks but the MPI job has " +
                          std::to_string(im.size) + " (start it with mpirun -np " + std::to_string(plan.world_size()) + ")");
  twinbed::validate(plan);
  // Each (kind, stream) has its own communicator, and MPI matches collectives by their order on it.
  check_collective_streams(plan, "CPU backend");
  const bool native = options_.collective_algorithm == kNativeAlgorithm;
  const auto registry = collective_algorithms();
  std::map<std::tuple<CollectiveOp, int, Bytes>, std::unique_ptr<Schedule>> schedules;
  const std::vector<int> reps = representatives(plan);
  for (std::size_t p = 0; p < plan.programs.size(); ++p) {
    const int r = reps[p];
    if (r < 0) continue;
    const Program& prog = plan.programs[p];
    Bytes colls = 0, messages = 0, largest = 0, max_in = 0, max_out = 0;
    std::string biggest;
    std::map<CollKey, int> seen;
    for (const PlanOp& op : prog.ops) {
      if (op.kind == OpKind::Compute) {
        const OpCost& cost = plan.costs.at(static_cast<std::size_t>(op.cost));
        const detail::ScaledCompute scaled = detail::scale_compute(cost, options_.compute_scale);
        max_in = std::max(max_in, scaled.input_floats());
        max_out = std::max(max_out, scaled.output_floats());
        if (scaled.pool_floats() > largest) {
          largest = scaled.pool_floats();
          biggest = plan.names.at(op.name);
        }
      } else if (op.kind == OpKind::Collective) {
        const CollKey key = key_of(plan, r, op);
        const int n = static_cast<int>(plan.group_members(r, op.group).size());
        if (!seen.emplace(key, n).second) continue;
        colls += 2 * key.bytes;  // native: send + receive; a schedule: workspace + scratch, about as much
        detail::as_count(key.bytes / 4, "collective '" + plan.names.at(op.name) + "'");
        if (!native && n > 1) {
          auto skey = std::make_tuple(key.op, n, key.bytes);
          if (!schedules.contains(skey)) {
            const CollectiveRequest req{key.op, n, key.bytes, 0, options_.ranks_per_host};
            try {
              schedules.emplace(skey, registry.get(options_.collective_algorithm).build(req));
            } catch (const InvalidArgument& e) {
              throw InvalidArgument("collective '" + plan.names.at(op.name) + "' (" + to_string(key.op) + " over " +
                                    std::to_string(n) + " ranks) cannot run with algorithm '" +
                                    options_.collective_algorithm + "': " + e.what());
            }
          }
        }
      } else if (op.kind == OpKind::Send || op.kind == OpKind::Recv) {
        detail::as_count(op.bytes, "message '" + plan.names.at(op.name) + "' (bytes)");
        messages += op.bytes;  // receives each get their own buffer; sends share one (counted generously)
      }
    }
    const Bytes pool = 4 * (max_in + max_out);  // the compute pool's input and output regions
    const Bytes techniques = detail::TechniqueOps(plan, r, options_.compute_scale).bytes();
    const Bytes tensors = detail::TensorMemory::program_peak(prog);
    const Bytes total = pool + colls + messages + techniques + tensors;
    if (total > options_.memory_budget)
      throw InvalidArgument("rank " + std::to_string(r) + " would need " + std::to_string(total) +
                            " bytes of buffers (compute " + std::to_string(pool) + ", for op '" + biggest +
                            "'; collectives " + std::to_string(colls) + "; messages " + std::to_string(messages) +
                            "; technique state " + std::to_string(techniques) + "; the plan's tensors " + std::to_string(tensors) +
                            "), more than memory_budget = " + std::to_string(options_.memory_budget) +
                            ": use a smaller model, a compute_scale below 1, or a larger memory_budget");
  }

  detail::flush_subnormals_on_this_thread();  // as the profile was measured (cpu_compute.hpp)
  // ---- this rank's program, communicators and buffers, once for every iteration.
  if (im.comm_groups != plan.groups) {
    im.comms.clear();  // collective (MPI_Comm_free), in the same order on every rank
    im.comm_groups = plan.groups;
  }
  // Communicators are created collectively over the world: every rank asks for the same keys, in order.
  std::vector<CommKey> used;
  for (const Program& prog : plan.programs)
    for (const PlanOp& op : prog.ops)
      if (op.kind == OpKind::Collective) used.emplace_back(op.stream, op.group);
  std::sort(used.begin(), used.end());
  used.erase(std::unique(used.begin(), used.end()), used.end());
  for (const CommKey& key : used) im.comm_for(plan, key);

  const Program& prog = plan.program(im.rank);
  PreparedProgram pp;
  pp.prog = &prog;
  pp.graph = ExecGraph(prog);
  pp.compute.resize(prog.size());
  pp.slot.assign(prog.size(), nullptr);
  pp.recv_offset.assign(prog.size(), 0);
  pp.techniques = std::make_unique<detail::TechniqueOps>(plan, im.rank, options_.compute_scale);
  pp.techniques->allocate();
  pp.tensors = std::make_unique<detail::TensorMemory>(prog);
  std::int64_t pool_in = 0, pool_out = 0, recv_bytes = 0, send_bytes = 0;
  std::map<CollKey, std::unique_ptr<CollectiveSlot>> slots;
  for (std::size_t i = 0; i < prog.size(); ++i) {
    const PlanOp& op = prog.ops[i];
    if (op.kind == OpKind::Compute) {
      pp.compute[i] = detail::scale_compute(plan.costs.at(static_cast<std::size_t>(op.cost)), options_.compute_scale);
      pool_in = std::max(pool_in, pp.compute[i].input_floats());
      pool_out = std::max(pool_out, pp.compute[i].output_floats());
    } else if (op.kind == OpKind::Collective) {
      const auto quantised = pp.techniques->quantised_reduction(static_cast<std::uint32_t>(i));
      const CollKey key = key_of(plan, im.rank, op, quantised);
      auto& slot = slots[key];
      if (!slot) {
        const int n = static_cast<int>(plan.group_members(im.rank, op.group).size());
        const Schedule* schedule = nullptr;
        if ((!native || quantised) && n > 1) {
          // Built above for the program's representative; a rank whose group differs in size (not what
          // build_plan makes), or a quantised reduction, builds its own. MPI's own collectives cannot
          // quantise at each hop: a quantised reduction runs the ring schedule under "native".
          const std::string algorithm = native ? "ring" : options_.collective_algorithm;
          auto& built = schedules[std::make_tuple(key.op, n, key.bytes)];
          if (!built) built = registry.get(algorithm).build(CollectiveRequest{key.op, n, key.bytes, 0, options_.ranks_per_host});
          schedule = built.get();
        }
        slot = std::make_unique<CollectiveSlot>(key, im.comm_for(plan, {op.stream, op.group}), n, schedule);
      }
      pp.slot[i] = slot.get();
    } else if (op.kind == OpKind::Recv) {
      pp.recv_offset[i] = recv_bytes;
      recv_bytes += op.bytes;
    } else if (op.kind == OpKind::Send) {
      send_bytes = std::max(send_bytes, op.bytes);
    }
  }
  detail::ComputePool pool(pool_in, pool_out);
  std::vector<char> recv_arena(static_cast<std::size_t>(recv_bytes));
  const std::vector<char> send_buf(static_cast<std::size_t>(std::max<std::int64_t>(send_bytes, 1)));

  // ---- warm-up, then the recorded iteration, each from a barrier. The first iteration, which allocates
  // the model state and everything else the plan holds, is also measured by the system: its resident
  // peak above what the rank held before it (the backend's own buffers above are already touched).
  RankRecord rec;
  ResidentPeak resident;
  std::int64_t resident_peak = -1;
  for (int it = 0; it <= options_.warmup_iters; ++it) {
    if (it == 0) resident.start();
    MPI_CHECK(MPI_Barrier(im.world.get()));
    // One clock origin per host: its lowest rank reads the clock and tells the others.
    std::int64_t origin = Clock::now().time_since_epoch().count();
    MPI_CHECK(MPI_Bcast(&origin, 1, MPI_INT64_T, 0, im.node.get()));
    const Clock::time_point t0{Clock::duration{origin}};
    const bool recorded = it == options_.warmup_iters;
    rec = im.execute(pp, recv_arena, send_buf, pool, t0, recorded);
    if (it == 0) resident_peak = resident.peak_above_start();
    pp.techniques->verify_pending();  // after the measurement: its scratch is not the plan's memory
  }

  // ---- gather to rank 0.
  Trace trace = detail::measured_trace(plan, name());
  const std::int64_t local_end = detail::last_span_end(rec.spans);
  std::int64_t step_end = 0;
  MPI_CHECK(MPI_Allreduce(&local_end, &step_end, 1, MPI_INT64_T, MPI_MAX, im.world.get()));
  trace.step_time = Time::ps(step_end);
  const PayloadCheck& mine = pp.techniques->checks();
  std::int64_t checked[2] = {mine.floats, mine.wrong};
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, checked, 2, MPI_INT64_T, MPI_SUM, im.world.get()));
  payload_check_ = {checked[0], checked[1]};

  const std::vector<char> spans_out = detail::pack_spans(rec.spans), samples_out = detail::pack_samples(rec.memory);

  const std::vector<char> span_bytes = detail::gather_bytes_to_0(im.world.get(), spans_out.data(), static_cast<std::int64_t>(spans_out.size()));
  const std::vector<char> sample_bytes =
      detail::gather_bytes_to_0(im.world.get(), samples_out.data(), static_cast<std::int64_t>(samples_out.size()));

  detail::take_records(trace, im.rank == 0, std::move(rec.spans), std::move(rec.memory), span_bytes, sample_bytes);
  // Resident peaks: every rank's, or none when a rank could not measure its own.
  std::vector<std::int64_t> peaks(static_cast<std::size_t>(im.size), -1);
  MPI_CHECK(MPI_Allgather(&resident_peak, 1, MPI_INT64_T, peaks.data(), 1, MPI_INT64_T, im.world.get()));
  if (std::all_of(peaks.begin(), peaks.end(), [](std::int64_t p) { return p >= 0; })) trace.resident_peak = std::move(peaks);
  return trace;
}

Trace run_plan_on_cpu(const Plan& plan, const CpuBackendOptions& options) { return CpuBackend(options).run(plan); }

}  // namespace twinbed::real
