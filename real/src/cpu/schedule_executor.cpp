#include "schedule_executor.hpp"

#include <algorithm>
#include <climits>
#include <cstring>
#include <span>

#include "twinbed/kernels/tgc.hpp"

#include "twinbed/core/error.hpp"
#include "twinbed/real/mpi.hpp"

namespace twinbed::real::detail {
namespace {

// MPI guarantees tags up to at least 32767; rounds reuse tags modulo this. Messages between one pair of
// ranks are matched in the order they were posted, and both sides walk the same rounds in the same
// order, so the tag only helps whoever reads a trace; it is not needed for correctness.
constexpr int kTagSpace = 32768;

Message& message_to(std::vector<Message>& messages, int peer) {
  for (Message& m : messages)
    if (m.peer == peer) return m;
  messages.push_back(Message{peer, 0, false, 0, {}});
  return messages.back();
}

}  // namespace

int world_size() {
  int initialized = 0, finalized = 0;
  MPI_CHECK(MPI_Initialized(&initialized));
  MPI_CHECK(MPI_Finalized(&finalized));
  if (!initialized || finalized)
    throw Error("the CPU real backend needs MPI running: create a twinbed::real::MpiSession first");
  int size = 0;
  MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size));
  return size;
}

int as_count(std::int64_t floats, const std::string& what) {
  if (floats > INT_MAX)
    throw InvalidArgument(what + " has " + std::to_string(floats) + " floats, more than one MPI message can carry (" +
                          std::to_string(INT_MAX) + ")");
  return static_cast<int>(floats);
}

RankProgram::RankProgram(const Schedule& schedule, int rank, std::optional<kernels::QuantSpec> wire)
    : rank_(rank), wire_(wire) {
  RankRounds lowered = lower_schedule(schedule, rank);
  layout_ = std::move(lowered.layout);
  rounds_.resize(lowered.rounds.size());
  for (std::size_t k = 0; k < lowered.rounds.size(); ++k) {
    RoundPlan& plan = rounds_[k];
    plan.tag = static_cast<int>(k % kTagSpace);
    for (const RankTransfer& t : lowered.rounds[k].sends) message_to(plan.sends, t.peer).parts.push_back(t);
    for (const RankTransfer& t : lowered.rounds[k].recvs) message_to(plan.recvs, t.peer).parts.push_back(t);
    finish_round(static_cast<int>(k), plan);
  }
  send_scratch_.resize(static_cast<std::size_t>(send_scratch_floats_));
  recv_scratch_.resize(static_cast<std::size_t>(recv_scratch_floats_));
  if (wire_) {  // the codec's buffers for the largest transfer, allocated with the rest
    std::int64_t largest = 0;
    for (const RoundPlan& plan : rounds_)
      for (const auto* messages : {&plan.sends, &plan.recvs})
        for (const Message& m : *messages)
          for (const RankTransfer& t : m.parts) largest = std::max(largest, t.count);
    decoded_.resize(static_cast<std::size_t>(largest));
    codes_.resize(kernels::quant_code_bytes(static_cast<std::size_t>(largest), wire_->bits));
  }
}

std::int64_t RankProgram::wire_floats(std::int64_t count) const {
  if (!wire_ || count == 0) return count;
  return static_cast<std::int64_t>((kernels::quant_payload_bytes(static_cast<std::size_t>(count), *wire_) + 3) / 4);
}

void RankProgram::encode(const float* from, std::int64_t count, float* to) {
  const auto n = static_cast<std::size_t>(count);
  const std::size_t blocks = kernels::quant_num_blocks(n, *wire_);
  codes_.resize(kernels::quant_code_bytes(n, wire_->bits));
  kernels::cpu::quantize(std::span<const float>(from, n), *wire_, codes_, std::span<float>(to, blocks));
  std::memcpy(to + blocks, codes_.data(), codes_.size());
}

void RankProgram::decode(const float* from, std::int64_t count, float* to) {
  const auto n = static_cast<std::size_t>(count);
  const std::size_t blocks = kernels::quant_num_blocks(n, *wire_);
  codes_.resize(kernels::quant_code_bytes(n, wire_->bits));
  std::memcpy(codes_.data(), from + blocks, codes_.size());
  kernels::cpu::dequantize(codes_, std::span<const float>(from, blocks), *wire_, std::span<float>(to, n));
}

std::int64_t RankProgram::workspace_floats() const {
  std::int64_t total = 0;
  for (const ChunkElements& c : layout_) total = std::max(total, c.offset + c.count);
  return total;
}

std::int64_t RankProgram::floats_sent() const {
  std::int64_t total = 0;
  for (const RoundPlan& plan : rounds_)
    for (const Message& m : plan.sends) total += m.count;
  return total;
}

void RankProgram::run(MPI_Comm comm, std::vector<float>& workspace) {
  for (std::size_t k = 0; k < rounds_.size(); ++k) {
    post_round(k, comm, workspace);
    MPI_CHECK(MPI_Waitall(static_cast<int>(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE));
    apply_round(k, workspace);
  }
}

void RankProgram::start(MPI_Comm comm, std::vector<float>& workspace) {
  next_round_ = 0;
  if (!rounds_.empty()) post_round(0, comm, workspace);
}

bool RankProgram::test(MPI_Comm comm, std::vector<float>& workspace) {
  while (next_round_ < rounds_.size()) {
    int done = 0;
    MPI_CHECK(MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &done, MPI_STATUSES_IGNORE));
    if (!done) return false;
    apply_round(next_round_, workspace);
    ++next_round_;
    if (next_round_ < rounds_.size()) post_round(next_round_, comm, workspace);
  }
  return true;
}

void RankProgram::post_round(std::size_t k, MPI_Comm comm, std::vector<float>& workspace) {
  const RoundPlan& plan = rounds_[k];
  float* ws = workspace.data();
  requests_.clear();
  // Receives first, so that a peer's send finds its match posted.
  for (const Message& m : plan.recvs) {
    float* into = m.direct ? ws + m.parts[0].offset : recv_scratch_.data() + m.scratch;
    MPI_CHECK(MPI_Irecv(into, m.count, MPI_FLOAT, m.peer, plan.tag, comm, &requests_.emplace_back()));
  }
  // Sends read the round-start data: nothing writes the workspace before the round's requests complete,
  // and a direct receive never targets a chunk this rank sends in the same round.
  for (const Message& m : plan.sends) {
    const float* from = nullptr;
    if (m.direct) {
      from = ws + m.parts[0].offset;
    } else {
      float* pack = send_scratch_.data() + m.scratch;
      for (const RankTransfer& t : m.parts) {
        if (wire_) {
          if (t.count > 0) encode(ws + t.offset, t.count, pack);
          pack += wire_floats(t.count);
        } else {
          pack = std::copy(ws + t.offset, ws + t.offset + t.count, pack);
        }
      }
      from = send_scratch_.data() + m.scratch;
    }
    MPI_CHECK(MPI_Isend(from, m.count, MPI_FLOAT, m.peer, plan.tag, comm, &requests_.emplace_back()));
  }
}

void RankProgram::apply_round(std::size_t k, std::vector<float>& workspace) {
  float* ws = workspace.data();
  // Apply what came in: reduce = add into this rank's copy, else overwrite it.
  for (const Message& m : rounds_[k].recvs) {
    if (m.direct) continue;
    const float* in = recv_scratch_.data() + m.scratch;
    for (const RankTransfer& t : m.parts) {
      float* own = ws + t.offset;
      const float* values = in;
      if (wire_ && t.count > 0) {
        decoded_.resize(static_cast<std::size_t>(t.count));
        decode(in, t.count, decoded_.data());
        values = decoded_.data();
      }
      if (t.reduce) {
        for (std::int64_t i = 0; i < t.count; ++i) own[i] += values[i];
      } else {
        std::copy(values, values + t.count, own);
      }
      in += wire_floats(t.count);
    }
  }
}

void RankProgram::finish_round(int k, RoundPlan& plan) {
  auto floats_of = [&](const Message& m, int src, int dst) {
    std::int64_t total = 0;
    for (const RankTransfer& t : m.parts) total += wire_floats(t.count);
    return as_count(total, "round " + std::to_string(k) + "'s message " + std::to_string(src) + " -> " + std::to_string(dst));
  };
  std::int64_t send_used = 0;
  for (Message& m : plan.sends) {
    m.count = floats_of(m, rank_, m.peer);
    m.direct = m.parts.size() == 1 && !wire_;  // one chunk: send it from where it lies
    if (!m.direct) {
      m.scratch = send_used;
      send_used += m.count;
    }
  }
  std::int64_t recv_used = 0;
  for (Message& m : plan.recvs) {
    m.count = floats_of(m, m.peer, rank_);
    // A lone transfer the lowering lets land in place is received straight into its chunk.
    m.direct = m.parts.size() == 1 && m.parts[0].in_place && !wire_;
    if (!m.direct) {
      m.scratch = recv_used;
      recv_used += m.count;
    }
  }
  send_scratch_floats_ = std::max(send_scratch_floats_, send_used);
  recv_scratch_floats_ = std::max(recv_scratch_floats_, recv_used);
}

}  // namespace twinbed::real::detail
