// Collective algorithms as schedules: data, not code paths.
//
// A Schedule splits the collective's data into chunks and moves them in rounds. In a round every
// listed transfer sends one chunk from `src` to `dst`; `reduce` says whether the receiver adds it into
// its own copy or overwrites its copy with it. All sends of a round read the data as it was when the
// round began. A rank takes part in round k+1 once its own sends, receives and reductions of round k
// are done: there is no global barrier, and that is also how the real backend executes a schedule.
// Transfers of one round with the same (src, dst) travel as one message. Chunks may be 0 bytes (a
// request smaller than its chunk count); they are moved and checked like any other, so a schedule's
// rounds depend on the size only through its chunk count, and a simulator charges them latency.
//
// Rounds are generated on demand, so a ring on 4,096 ranks (8,190 rounds of 4,096 transfers) costs
// O(ranks) memory, not O(ranks x rounds).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "twinbed/core/units.hpp"

namespace twinbed {

enum class CollectiveOp { AllReduce, ReduceScatter, AllGather, Broadcast, Reduce, AllToAll };

// "allreduce", "reducescatter", "allgather", "broadcast", "reduce", "alltoall".
std::string to_string(CollectiveOp op);
// Accepts the names above; throws UnknownName listing them.
CollectiveOp parse_collective_op(const std::string& name);
std::vector<std::string> collective_op_names();

// nccl-tests' bus-bandwidth factor: all-reduce 2(n-1)/n; reduce-scatter, all-gather, all-to-all
// (n-1)/n; broadcast, reduce 1.
double busbw_factor(CollectiveOp op, int ranks);

// What to do. `bytes` follows nccl-tests: the per-rank buffer for all-reduce, broadcast and reduce; the
// whole gathered array (n blocks) for all-gather and reduce-scatter; each rank's whole send buffer (n
// blocks, one per destination) for all-to-all.
struct CollectiveRequest {
  CollectiveOp op = CollectiveOp::AllReduce;
  int ranks = 2;
  Bytes bytes = 0;
  int root = 0;            // broadcast and reduce
  int ranks_per_host = 0;  // consecutive ranks per host, for hierarchical algorithms; 0 = one host
  bool operator==(const CollectiveRequest&) const = default;
};

struct Transfer {
  int src = 0;
  int dst = 0;
  int chunk = 0;
  bool reduce = false;
  bool operator==(const Transfer&) const = default;
};

// What chunk c is: its size, and the block it belongs to. Blocks give the op its meaning: for
// reduce-scatter and all-gather, block b is rank b's share; for all-to-all, block s*n+d is what rank s
// sends to rank d; for the other ops there is one block, 0.
struct Chunk {
  Bytes bytes = 0;
  int block = 0;
};

class Schedule {
 public:
  Schedule(CollectiveRequest request, std::string algorithm, std::vector<Chunk> chunks)
      : request_(request), algorithm_(std::move(algorithm)), chunks_(std::move(chunks)) {}
  virtual ~Schedule() = default;

  const CollectiveRequest& request() const { return request_; }
  const std::string& algorithm() const { return algorithm_; }
  const std::vector<Chunk>& chunks() const { return chunks_; }

  virtual int num_rounds() const = 0;
  // Replaces `out` with round k's transfers (0 <= k < num_rounds()).
  virtual void round(int k, std::vector<Transfer>& out) const = 0;
  // Optional: an id shared by rounds whose transfers have the same (src, dst, bytes, reduce) pattern
  // (chunk ids may differ), so a simulator may time such rounds once. -1: no claim.
  virtual int round_shape(int /*k*/) const { return -1; }

 private:
  CollectiveRequest request_;
  std::string algorithm_;
  std::vector<Chunk> chunks_;
};

// A schedule stored as explicit rounds (small schedules, tests, hand-written ones).
class ExplicitSchedule : public Schedule {
 public:
  ExplicitSchedule(CollectiveRequest request, std::string algorithm, std::vector<Chunk> chunks,
                   std::vector<std::vector<Transfer>> rounds)
      : Schedule(request, std::move(algorithm), std::move(chunks)), rounds_(std::move(rounds)) {}
  int num_rounds() const override { return static_cast<int>(rounds_.size()); }
  void round(int k, std::vector<Transfer>& out) const override { out = rounds_.at(k); }

 private:
  std::vector<std::vector<Transfer>> rounds_;
};

// Symbolic execution of a schedule, with no clock: tracks which ranks' contributions each rank's copy
// of each chunk holds, and checks the final state against the op's meaning. Used by tests and by the
// real backend's self-check.
struct ScheduleCheck {
  bool ok = true;
  std::vector<std::string> errors;   // first few problems, in words ("rank 3 ends without block 2")
  std::vector<Bytes> bytes_sent;     // per rank
  std::vector<Bytes> bytes_received; // per rank
  std::vector<Bytes> bytes_reduced;  // per rank: bytes added into its buffers
  int rounds = 0;
};
ScheduleCheck check_schedule(const Schedule& schedule);

}  // namespace twinbed
