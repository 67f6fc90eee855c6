// Internal to real/src/cpu: the executor of one rank's part of a collective Schedule over MPI
// point-to-point, shared by the collective measurements (collectives.cpp) and the Plan executor
// (cpu_backend.cpp). Moved here from collectives.cpp unchanged in behaviour; the Plan executor adds the
// non-blocking form (start / test), which it needs because one thread drives several collectives and
// compute ops at once and must never block inside one collective while a peer waits on another.
//
// Includes <mpi.h>: only .cpp files of the MPI build include this header.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "twinbed/core/schedule.hpp"
#include "twinbed/kernels/payload.hpp"
#include "twinbed/real/collective_data.hpp"
#include "twinbed/real/mpi.hpp"

namespace twinbed::real::detail {

// `floats` as an MPI count; throws InvalidArgument naming `what` when it exceeds INT_MAX.
int as_count(std::int64_t floats, const std::string& what);

// One message of one round: every transfer of the round between this rank and `peer`, in the order the
// round lists them (both ends walk the same list, so they agree on the packing).
struct Message {
  int peer = 0;
  int count = 0;              // floats
  bool direct = false;        // sent from / received into the chunk itself, no scratch
  std::int64_t scratch = 0;   // offset in the send or receive scratch when !direct
  std::vector<RankTransfer> parts;
};

struct RoundPlan {
  int tag = 0;
  std::vector<Message> sends;
  std::vector<Message> recvs;
};

// This rank's part of a schedule, worked out once before any timing: the shared lowering
// (collective_data.hpp, lower_schedule; walking Schedule::round costs O(ranks) per round, which should
// not be inside the timed loop), with its transfers to one peer packed into one message.
// Rank numbers are positions in the communicator the schedule runs on.
//
// Execution, per round: post the receives (MPI_Irecv into scratch, or straight into the chunk when the
// message is a lone transfer the lowering marks in_place) and the sends (MPI_Isend of the round-start data, transfers to one peer packed into one
// message), wait for all of them, then apply what came in (reduce = add, else copy). No barrier between
// rounds. Messages use tags round % 32768 on the given communicator; between one pair of ranks they
// match in posting order, so back-to-back executions on one communicator never mix.
//
// Not thread-safe; one execution at a time per object (it owns the scratch buffers and requests).
// Throws InvalidArgument from the constructor when a transfer names no valid rank or chunk, or a message
// exceeds INT_MAX floats; Error (MPI_CHECK) when MPI fails.
// The size of MPI_COMM_WORLD; throws Error saying to create an MpiSession when MPI is not running.
int world_size();

// A private duplicate of MPI_COMM_WORLD, so our messages can never match a caller's. It inherits the
// world's error handler (MPI_ERRORS_RETURN, set by MpiSession); freed without throwing.
class DupComm {
 public:
  DupComm() {
    MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm_));
    MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  }
  ~DupComm() {
    if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
  }
  DupComm(const DupComm&) = delete;
  DupComm& operator=(const DupComm&) = delete;
  MPI_Comm get() const { return comm_; }
  int rank() const { return rank_; }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
};

// WIRE CODEC (optional; TGC's quantised reduction, core/passes/tgc.hpp): every transfer travels
// quantised at `wire` (kernels/tgc.hpp's format, blocks counted from the transfer's first float): the
// sender encodes the chunk's current values, the receiver decodes them before adding or copying. A
// reduction is then decoded, added and encoded again at every hop, and the bytes on the wire are the
// transfers' quantised payloads ([fp32 scales][codes], padded to whole floats). Messages never land in
// place with a codec. The rank that completes a chunk's reduction keeps its unencoded sum, the others
// its decoded copy: after an all-reduce the ranks' values differ by at most one quantisation step.
class RankProgram {
 public:
  RankProgram(const Schedule& schedule, int rank, std::optional<kernels::QuantSpec> wire = std::nullopt);

  const std::vector<ChunkElements>& layout() const { return layout_; }
  // Floats a workspace for this schedule holds (every chunk back to back).
  std::int64_t workspace_floats() const;
  // Floats this rank sends in one execution (every message of every round).
  std::int64_t floats_sent() const;

  // One blocking execution of the whole schedule on `workspace` (laid out as layout()).
  void run(MPI_Comm comm, std::vector<float>& workspace);

  // The same, non-blocking: start() posts round 0; test() completes rounds whose messages have all
  // arrived (MPI_Testall), posting the next, and returns true once the last round is applied. Between
  // start() and the true test(), `comm` and `workspace` must stay alive and untouched.
  void start(MPI_Comm comm, std::vector<float>& workspace);
  bool test(MPI_Comm comm, std::vector<float>& workspace);

 private:
  void finish_round(int k, RoundPlan& plan);
  void post_round(std::size_t k, MPI_Comm comm, std::vector<float>& workspace);
  void apply_round(std::size_t k, std::vector<float>& workspace);

  // Floats a transfer of `count` floats takes on the wire.
  std::int64_t wire_floats(std::int64_t count) const;
  void encode(const float* from, std::int64_t count, float* to);
  void decode(const float* from, std::int64_t count, float* to);

  int rank_;
  std::optional<kernels::QuantSpec> wire_;
  std::vector<float> decoded_;  // a received transfer, decoded
  std::vector<std::uint8_t> codes_;
  std::vector<ChunkElements> layout_;
  std::vector<RoundPlan> rounds_;
  std::int64_t send_scratch_floats_ = 0;
  std::int64_t recv_scratch_floats_ = 0;
  std::vector<float> send_scratch_;
  std::vector<float> recv_scratch_;
  std::vector<MPI_Request> requests_;
  std::size_t next_round_ = 0;  // non-blocking form: the round whose messages are in flight
};

}  // namespace twinbed::real::detail
