#include "twinbed/real/collectives.hpp"

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "twinbed/core/collective_algorithms.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/real/collective_data.hpp"
#include "twinbed/real/mpi.hpp"

namespace twinbed::real {
namespace {

// MPI guarantees tags up to at least 32767; rounds reuse tags modulo this. Messages between one pair of
// ranks are matched in the order they were posted, and both sides walk the same rounds in the same
// order, so the tag only helps whoever reads a trace; it is not needed for correctness.
constexpr int kTagSpace = 32768;

int world_size() {
  int initialized = 0;
  MPI_CHECK(MPI_Initialized(&initialized));
  int finalized = 0;
  MPI_CHECK(MPI_Finalized(&finalized));
  if (!initialized || finalized)
    throw Error("the CPU real backend needs MPI running: create a twinbed::real::MpiSession first");
  int size = 0;
  MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size));
  return size;
}

// A private duplicate of MPI_COMM_WORLD for one measurement, so our messages can never match a
// caller's. It inherits the world's error handler (MPI_ERRORS_RETURN, set by MpiSession).
class DupComm {
 public:
  DupComm() {
    MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm_));
    MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  }
  ~DupComm() {
    if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);  // cannot throw from here
  }
  DupComm(const DupComm&) = delete;
  DupComm& operator=(const DupComm&) = delete;
  MPI_Comm get() const { return comm_; }
  int rank() const { return rank_; }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
};

int as_count(std::int64_t floats, const std::string& what) {
  if (floats > INT_MAX)
    throw InvalidArgument(what + " has " + std::to_string(floats) + " floats, more than one MPI message can carry (" +
                          std::to_string(INT_MAX) + ")");
  return static_cast<int>(floats);
}

void validate_options(const MeasureOptions& options) {
  if (options.iters < 1) throw InvalidArgument("iters must be >= 1 (got " + std::to_string(options.iters) + ")");
  if (options.warmup_iters < 0)
    throw InvalidArgument("warmup_iters must be >= 0 (got " + std::to_string(options.warmup_iters) + ")");
}

void validate_ranks(const CollectiveRequest& request, int world) {
  if (request.ranks != world)
    throw InvalidArgument("the collective is for " + std::to_string(request.ranks) + " ranks but the MPI job has " +
                          std::to_string(world));
}

// ---- the schedule executor ------------------------------------------------------------------------

// One message of one round: every transfer of the round between this rank and `peer`, in the order the
// round lists them (both ends walk the same list, so they agree on the packing).
struct Message {
  int peer = 0;
  int count = 0;              // floats
  bool direct = false;        // sent from / received into the chunk itself, no scratch
  std::int64_t scratch = 0;   // offset in the send or receive scratch when !direct
  std::vector<Transfer> parts;
};

struct RoundPlan {
  int tag = 0;
  std::vector<Message> sends;
  std::vector<Message> recvs;
};

Message& message_to(std::vector<Message>& messages, int peer) {
  for (Message& m : messages)
    if (m.peer == peer) return m;
  messages.push_back(Message{peer, 0, false, 0, {}});
  return messages.back();
}

// This rank's part of a schedule, worked out once before any timing: walking Schedule::round costs
// O(ranks) per round (it lists every rank's transfers), which should not be inside the timed loop.
class RankProgram {
 public:
  RankProgram(const Schedule& schedule, int rank) : layout_(chunk_elements(schedule.chunks())) {
    const int n = schedule.request().ranks;
    const int chunks = static_cast<int>(layout_.size());
    std::vector<Transfer> transfers;
    rounds_.resize(static_cast<std::size_t>(schedule.num_rounds()));
    for (int k = 0; k < schedule.num_rounds(); ++k) {
      schedule.round(k, transfers);
      RoundPlan& plan = rounds_[static_cast<std::size_t>(k)];
      plan.tag = k % kTagSpace;
      for (const Transfer& t : transfers) {
        // A transfer that names no real rank or chunk cannot be executed at all (unlike a missing one,
        // which the data check catches), so it is an argument error.
        if (t.src < 0 || t.src >= n || t.dst < 0 || t.dst >= n || t.src == t.dst || t.chunk < 0 || t.chunk >= chunks)
          throw InvalidArgument("round " + std::to_string(k) + ": transfer " + std::to_string(t.src) + " -> " +
                                std::to_string(t.dst) + " of chunk " + std::to_string(t.chunk) +
                                " names no valid ranks and chunk");
        if (t.src == rank) message_to(plan.sends, t.dst).parts.push_back(t);
        if (t.dst == rank) message_to(plan.recvs, t.src).parts.push_back(t);
      }
      finish_round(k, plan);
    }
    send_scratch_.resize(static_cast<std::size_t>(send_scratch_floats_));
    recv_scratch_.resize(static_cast<std::size_t>(recv_scratch_floats_));
  }

  const std::vector<ChunkElements>& layout() const { return layout_; }

  // One execution of the whole schedule on `workspace` (laid out as layout()).
  void run(MPI_Comm comm, std::vector<float>& workspace) {
    float* ws = workspace.data();
    for (const RoundPlan& plan : rounds_) {
      requests_.clear();
      // Receives first, so that a peer's send finds its match posted.
      for (const Message& m : plan.recvs) {
        float* into = m.direct ? ws + layout_[static_cast<std::size_t>(m.parts[0].chunk)].offset
                               : recv_scratch_.data() + m.scratch;
        MPI_CHECK(MPI_Irecv(into, m.count, MPI_FLOAT, m.peer, plan.tag, comm, &requests_.emplace_back()));
      }
      // Sends read the round-start data: nothing below writes the workspace before MPI_Waitall, and a
      // direct receive never targets a chunk this rank sends in the same round.
      for (const Message& m : plan.sends) {
        const float* from = nullptr;
        if (m.direct) {
          from = ws + layout_[static_cast<std::size_t>(m.parts[0].chunk)].offset;
        } else {
          float* pack = send_scratch_.data() + m.scratch;
          for (const Transfer& t : m.parts) {
            const ChunkElements& c = layout_[static_cast<std::size_t>(t.chunk)];
            pack = std::copy(ws + c.offset, ws + c.offset + c.count, pack);
          }
          from = send_scratch_.data() + m.scratch;
        }
        MPI_CHECK(MPI_Isend(from, m.count, MPI_FLOAT, m.peer, plan.tag, comm, &requests_.emplace_back()));
      }
      MPI_CHECK(MPI_Waitall(static_cast<int>(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE));
      // Apply what came in: reduce = add into this rank's copy, else overwrite it.
      for (const Message& m : plan.recvs) {
        if (m.direct) continue;
        const float* in = recv_scratch_.data() + m.scratch;
        for (const Transfer& t : m.parts) {
          const ChunkElements& c = layout_[static_cast<std::size_t>(t.chunk)];
          float* own = ws + c.offset;
          if (t.reduce) {
            for (std::int64_t i = 0; i < c.count; ++i) own[i] += in[i];
          } else {
            std::copy(in, in + c.count, own);
          }
          in += c.count;
        }
      }
    }
  }

 private:
  void finish_round(int k, RoundPlan& plan) {
    auto floats_of = [&](const Message& m) {
      std::int64_t total = 0;
      for (const Transfer& t : m.parts) total += layout_[static_cast<std::size_t>(t.chunk)].count;
      return as_count(total, "round " + std::to_string(k) + "'s message " + std::to_string(m.parts[0].src) + " -> " +
                                 std::to_string(m.parts[0].dst));
    };
    std::int64_t send_used = 0;
    for (Message& m : plan.sends) {
      m.count = floats_of(m);
      m.direct = m.parts.size() == 1;  // one chunk: send it from where it lies
      if (!m.direct) {
        m.scratch = send_used;
        send_used += m.count;
      }
    }
    auto sent_now = [&](int chunk) {
      return std::any_of(plan.sends.begin(), plan.sends.end(), [&](const Message& m) {
        return std::any_of(m.parts.begin(), m.parts.end(), [&](const Transfer& t) { return t.chunk == chunk; });
      });
    };
    auto written_by_others = [&](const Message& self, int chunk) {
      return std::any_of(plan.recvs.begin(), plan.recvs.end(), [&](const Message& m) {
        return &m != &self &&
               std::any_of(m.parts.begin(), m.parts.end(), [&](const Transfer& t) { return t.chunk == chunk; });
      });
    };
    std::int64_t recv_used = 0;
    for (Message& m : plan.recvs) {
      m.count = floats_of(m);
      // A lone overwrite may land in the chunk itself, unless this rank sends that chunk in this round
      // (its send must read the old data) or another message of the round also writes it.
      const int chunk = m.parts[0].chunk;
      m.direct = m.parts.size() == 1 && !m.parts[0].reduce && !sent_now(chunk) && !written_by_others(m, chunk);
      if (!m.direct) {
        m.scratch = recv_used;
        recv_used += m.count;
      }
    }
    send_scratch_floats_ = std::max(send_scratch_floats_, send_used);
    recv_scratch_floats_ = std::max(recv_scratch_floats_, recv_used);
  }

  std::vector<ChunkElements> layout_;
  std::vector<RoundPlan> rounds_;
  std::int64_t send_scratch_floats_ = 0;
  std::int64_t recv_scratch_floats_ = 0;
  std::vector<float> send_scratch_;
  std::vector<float> recv_scratch_;
  std::vector<MPI_Request> requests_;
};

// ---- timing and checking, shared by both kinds --------------------------------------------------

struct Runner {
  std::function<void()> fill;                // fresh inputs
  std::function<void()> run;                 // one iteration
  std::function<std::int64_t()> count_wrong; // this rank's wrong floats after one iteration on fresh inputs
};

CollectiveRow measure_with(const CollectiveRequest& request, const std::string& algorithm, const DupComm& comm,
                           const Runner& runner, const MeasureOptions& options) {
  std::optional<std::int64_t> wrong;
  if (options.check) {
    runner.fill();
    MPI_CHECK(MPI_Barrier(comm.get()));
    runner.run();
    std::int64_t local = runner.count_wrong();
    std::int64_t total = 0;
    MPI_CHECK(MPI_Allreduce(&local, &total, 1, MPI_INT64_T, MPI_SUM, comm.get()));
    wrong = total;
  }
  runner.fill();
  for (int i = 0; i < options.warmup_iters; ++i) runner.run();
  // Start together; each rank stops its own clock, and the slowest rank's mean is the collective's time.
  MPI_CHECK(MPI_Barrier(comm.get()));
  const double start = MPI_Wtime();
  for (int i = 0; i < options.iters; ++i) runner.run();
  const double mean = (MPI_Wtime() - start) / options.iters;
  double slowest = 0;
  MPI_CHECK(MPI_Allreduce(&mean, &slowest, 1, MPI_DOUBLE, MPI_MAX, comm.get()));
  CollectiveRow row = make_collective_row(request.op, request.ranks, request.bytes, Time::from_seconds(slowest), algorithm);
  row.wrong = wrong;
  return row;
}

// ---- MPI's own collectives ------------------------------------------------------------------------

// Buffers of one native collective, laid out so that collective_data's fill and check apply:
// `send` / `recv` are described by ChunkElements lists over the op's blocks.
struct NativeBuffers {
  std::vector<ChunkElements> send_layout;
  std::vector<ChunkElements> recv_layout;
  std::vector<float> send;
  std::vector<float> recv;
};

std::vector<ChunkElements> blocks_layout(const std::vector<int>& blocks, std::int64_t floats_each) {
  std::vector<ChunkElements> out;
  for (std::size_t i = 0; i < blocks.size(); ++i)
    out.push_back({blocks[i], 0, floats_each, static_cast<std::int64_t>(i) * floats_each});
  return out;
}

Runner native_runner(const CollectiveRequest& req, const DupComm& comm, NativeBuffers& b) {
  const int n = req.ranks;
  const int me = comm.rank();
  const std::int64_t floats = req.bytes / 4;
  const std::string what = to_string(req.op) + " of " + std::to_string(req.bytes) + " bytes";
  const int count = as_count(floats, what);
  const int block = as_count(floats / n, what);  // per-rank block of reduce-scatter, all-gather, all-to-all
  std::vector<int> all_blocks(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) all_blocks[static_cast<std::size_t>(i)] = i;
  auto poison = [](const std::vector<ChunkElements>& layout, std::vector<float>& buf) {
    std::int64_t total = 0;
    for (const ChunkElements& c : layout) total = std::max(total, c.offset + c.count);
    buf.assign(static_cast<std::size_t>(total), kPoison);
  };
  // The input side follows the schedule semantics through a request whose op marks every send block as
  // held at the start (all-reduce for reduced data); the receive side starts poisoned.
  auto fill_send = [&b, me, req](CollectiveOp as) {
    CollectiveRequest input = req;
    input.op = as;
    fill_inputs(input, me, b.send_layout, b.send);
  };
  MPI_Comm c = comm.get();
  Runner r;
  switch (req.op) {
    case CollectiveOp::AllReduce:
    case CollectiveOp::Broadcast:
      b.recv_layout = blocks_layout({0}, floats);
      r.fill = [&b, me, req] { fill_inputs(req, me, b.recv_layout, b.recv); };
      if (req.op == CollectiveOp::AllReduce)
        r.run = [&b, count, c] { MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, b.recv.data(), count, MPI_FLOAT, MPI_SUM, c)); };
      else
        r.run = [&b, count, c, root = req.root] { MPI_CHECK(MPI_Bcast(b.recv.data(), count, MPI_FLOAT, root, c)); };
      break;
    case CollectiveOp::Reduce:
      b.send_layout = blocks_layout({0}, floats);
      b.recv_layout = b.send_layout;
      r.fill = [&b, fill_send, poison] { fill_send(CollectiveOp::AllReduce); poison(b.recv_layout, b.recv); };
      r.run = [&b, count, c, root = req.root] {
        MPI_CHECK(MPI_Reduce(b.send.data(), b.recv.data(), count, MPI_FLOAT, MPI_SUM, root, c));
      };
      break;
    case CollectiveOp::ReduceScatter:
      b.send_layout = blocks_layout(all_blocks, block);
      b.recv_layout = blocks_layout({me}, block);
      r.fill = [&b, fill_send, poison] { fill_send(CollectiveOp::ReduceScatter); poison(b.recv_layout, b.recv); };
      r.run = [&b, block, c] {
        MPI_CHECK(MPI_Reduce_scatter_block(b.send.data(), b.recv.data(), block, MPI_FLOAT, MPI_SUM, c));
      };
      break;
    case CollectiveOp::AllGather:
      b.send_layout = blocks_layout({me}, block);
      b.recv_layout = blocks_layout(all_blocks, block);
      r.fill = [&b, fill_send, poison] { fill_send(CollectiveOp::AllGather); poison(b.recv_layout, b.recv); };
      r.run = [&b, block, c] {
        MPI_CHECK(MPI_Allgather(b.send.data(), block, MPI_FLOAT, b.recv.data(), block, MPI_FLOAT, c));
      };
      break;
    case CollectiveOp::AllToAll: {
      std::vector<int> sent(static_cast<std::size_t>(n)), received(static_cast<std::size_t>(n));
      for (int p = 0; p < n; ++p) {
        sent[static_cast<std::size_t>(p)] = me * n + p;      // block me*n+p goes to rank p
        received[static_cast<std::size_t>(p)] = p * n + me;  // block p*n+me comes from rank p
      }
      b.send_layout = blocks_layout(sent, block);
      b.recv_layout = blocks_layout(received, block);
      r.fill = [&b, fill_send, poison] { fill_send(CollectiveOp::AllToAll); poison(b.recv_layout, b.recv); };
      r.run = [&b, block, c] {
        MPI_CHECK(MPI_Alltoall(b.send.data(), block, MPI_FLOAT, b.recv.data(), block, MPI_FLOAT, c));
      };
      break;
    }
  }
  r.count_wrong = [&b, me, req] { return count_wrong(req, me, b.recv_layout, b.recv); };
  return r;
}

void validate_native(const CollectiveRequest& request) {
  check_request_size(request);
  if ((request.op == CollectiveOp::Broadcast || request.op == CollectiveOp::Reduce) &&
      (request.root < 0 || request.root >= request.ranks))
    throw InvalidArgument("root must be in [0, ranks) = [0, " + std::to_string(request.ranks) + ") (got " +
                          std::to_string(request.root) + ")");
}

}  // namespace

CollectiveRow measure_schedule(const Schedule& schedule, const MeasureOptions& options) {
  validate_options(options);
  const CollectiveRequest& request = schedule.request();
  validate_ranks(request, world_size());
  int rank = 0;
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  RankProgram program(schedule, rank);  // validates the chunks and transfers on every rank alike
  DupComm comm;
  std::vector<float> workspace;
  Runner runner;
  runner.fill = [&] { fill_inputs(request, rank, program.layout(), workspace); };
  runner.run = [&] { program.run(comm.get(), workspace); };
  runner.count_wrong = [&] { return count_wrong(request, rank, program.layout(), workspace); };
  return measure_with(request, schedule.algorithm(), comm, runner, options);
}

CollectiveRow measure_native(const CollectiveRequest& request, const MeasureOptions& options) {
  validate_options(options);
  validate_native(request);
  validate_ranks(request, world_size());
  DupComm comm;
  NativeBuffers buffers;
  const Runner runner = native_runner(request, comm, buffers);
  return measure_with(request, kNativeAlgorithm, comm, runner, options);
}

std::vector<CollectiveRow> measure_collectives(CollectiveOp op, const std::string& algorithm, std::vector<Bytes> sizes,
                                               int root, int ranks_per_host, const MeasureOptions& options) {
  const bool native = algorithm == kNativeAlgorithm;
  const Registry<CollectiveAlgorithm> registry = collective_algorithms();
  if (!native && registry.find(algorithm) == nullptr)
    throw UnknownName("collective algorithm", algorithm, real_collective_algorithm_names());
  validate_options(options);
  const int world = world_size();

  // Everything that can be wrong with the arguments is found here, before any rank communicates.
  std::vector<CollectiveRequest> requests;
  std::vector<std::unique_ptr<Schedule>> schedules;
  for (Bytes size : sizes) {
    const CollectiveRequest request{op, world, size, root, ranks_per_host};
    check_request_size(request);
    if (native) {
      validate_native(request);
    } else {
      schedules.push_back(registry.get(algorithm).build(request));
      (void)chunk_elements(schedules.back()->chunks());
    }
    requests.push_back(request);
  }

  std::vector<CollectiveRow> rows;
  for (std::size_t i = 0; i < requests.size(); ++i)
    rows.push_back(native ? measure_native(requests[i], options) : measure_schedule(*schedules[i], options));
  return rows;
}

}  // namespace twinbed::real
