#include "schedule_executor.hpp"

#include <algorithm>
#include <climits>

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

RankProgram::RankProgram(const Schedule& schedule, int rank) : layout_(chunk_elements(schedule.chunks())) {
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
    float* into = m.direct ? ws + layout_[static_cast<std::size_t>(m.parts[0].chunk)].offset
                           : recv_scratch_.data() + m.scratch;
    MPI_CHECK(MPI_Irecv(into, m.count, MPI_FLOAT, m.peer, plan.tag, comm, &requests_.emplace_back()));
  }
  // Sends read the round-start data: nothing writes the workspace before the round's requests complete,
  // and a direct receive never targets a chunk this rank sends in the same round.
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
}

void RankProgram::apply_round(std::size_t k, std::vector<float>& workspace) {
  float* ws = workspace.data();
  // Apply what came in: reduce = add into this rank's copy, else overwrite it.
  for (const Message& m : rounds_[k].recvs) {
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

void RankProgram::finish_round(int k, RoundPlan& plan) {
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

}  // namespace twinbed::real::detail
