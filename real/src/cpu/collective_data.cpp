#include "twinbed/real/collective_data.hpp"

#include <algorithm>
#include <array>
#include <string>

#include "twinbed/core/collective_algorithms.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/real/collectives.hpp"

namespace twinbed::real {
namespace {

constexpr int kPeriod = 23;  // input_value is periodic in the index with this period

long long blocks_of(const CollectiveRequest& req) {
  switch (req.op) {
    case CollectiveOp::ReduceScatter:
    case CollectiveOp::AllGather: return req.ranks;
    case CollectiveOp::AllToAll: return static_cast<long long>(req.ranks) * req.ranks;
    default: return 1;
  }
}

}  // namespace

float input_value(int rank, int block, std::int64_t index) {
  // Mixing rank, block and index makes a copy of the wrong rank's or block's data show in most floats.
  const std::int64_t v = (static_cast<std::int64_t>(rank) * 7 + static_cast<std::int64_t>(block) * 13 + index) % kPeriod;
  return static_cast<float>(1 + v);
}

std::vector<ChunkElements> chunk_elements(const std::vector<Chunk>& chunks) {
  // Bytes seen so far per block: chunks of one block need not be adjacent in the chunk list.
  std::vector<std::pair<int, Bytes>> seen;  // (block, bytes); few blocks per schedule in practice
  auto seen_of = [&](int block) -> Bytes& {
    for (auto& [b, bytes] : seen)
      if (b == block) return bytes;
    seen.emplace_back(block, 0);
    return seen.back().second;
  };
  std::vector<ChunkElements> out(chunks.size());
  std::int64_t offset = 0;
  for (std::size_t c = 0; c < chunks.size(); ++c) {
    if (chunks[c].bytes < 0)
      throw InvalidArgument("chunk " + std::to_string(c) + " has negative size " + std::to_string(chunks[c].bytes));
    Bytes& start = seen_of(chunks[c].block);
    const Bytes end = start + chunks[c].bytes;
    out[c] = {chunks[c].block, start / 4, end / 4 - start / 4, offset};
    offset += out[c].count;
    start = end;
  }
  for (const auto& [block, bytes] : seen)
    if (bytes % 4 != 0)
      throw InvalidArgument("block " + std::to_string(block) + " has " + std::to_string(bytes) +
                            " bytes, not a whole number of 4-byte floats");
  return out;
}

namespace {

// The ops whose buffer is one block per rank.
bool per_rank_blocks(CollectiveOp op) {
  return op == CollectiveOp::ReduceScatter || op == CollectiveOp::AllGather || op == CollectiveOp::AllToAll;
}

}  // namespace

Bytes size_unit(CollectiveOp op, int ranks) { return per_rank_blocks(op) ? 4 * static_cast<Bytes>(ranks) : 4; }

Bytes round_up_to_unit(CollectiveOp op, int ranks, Bytes bytes) {
  const Bytes unit = size_unit(op, ranks);
  return (bytes + unit - 1) / unit * unit;
}

Bytes round_down_to_unit(CollectiveOp op, int ranks, Bytes bytes) {
  const Bytes unit = size_unit(op, ranks);
  return std::max(unit, bytes / unit * unit);
}

void check_request_size(const CollectiveRequest& req) {
  if (req.ranks < 1) throw InvalidArgument("ranks must be >= 1 (got " + std::to_string(req.ranks) + ")");
  if (req.bytes < 0) throw InvalidArgument("bytes must be >= 0 (got " + std::to_string(req.bytes) + ")");
  const Bytes unit = size_unit(req.op, req.ranks);
  if (req.bytes % unit != 0)
    throw InvalidArgument(to_string(req.op) + " of " + std::to_string(req.bytes) + " bytes on " +
                          std::to_string(req.ranks) + " ranks: the size must be a multiple of " + std::to_string(unit) +
                          (per_rank_blocks(req.op) ? " (4-byte floats, the same number per rank)" : " (4-byte floats)"));
}

RankRounds lower_schedule(const Schedule& schedule, int rank) {
  RankRounds out;
  out.layout = chunk_elements(schedule.chunks());
  const int n = schedule.request().ranks;
  const int chunks = static_cast<int>(out.layout.size());
  std::vector<Transfer> transfers;
  out.rounds.resize(static_cast<std::size_t>(schedule.num_rounds()));
  for (int k = 0; k < schedule.num_rounds(); ++k) {
    schedule.round(k, transfers);
    RankRound& round = out.rounds[static_cast<std::size_t>(k)];
    for (const Transfer& t : transfers) {
      // A transfer that names no real rank or chunk cannot be executed at all (unlike a missing one,
      // which the data check catches), so it is an argument error.
      if (t.src < 0 || t.src >= n || t.dst < 0 || t.dst >= n || t.src == t.dst || t.chunk < 0 || t.chunk >= chunks)
        throw InvalidArgument("round " + std::to_string(k) + ": transfer " + std::to_string(t.src) + " -> " +
                              std::to_string(t.dst) + " of chunk " + std::to_string(t.chunk) +
                              " names no valid ranks and chunk");
      const ChunkElements& c = out.layout[static_cast<std::size_t>(t.chunk)];
      if (t.src == rank) round.sends.push_back({t.dst, t.chunk, c.offset, c.count, t.reduce, false});
      if (t.dst == rank) round.recvs.push_back({t.src, t.chunk, c.offset, c.count, t.reduce, false});
    }
    for (std::size_t i = 0; i < round.recvs.size(); ++i) {
      RankTransfer& r = round.recvs[i];
      const bool sent_now = std::any_of(round.sends.begin(), round.sends.end(),
                                        [&](const RankTransfer& s) { return s.chunk == r.chunk; });
      bool written_twice = false;
      for (std::size_t j = 0; j < round.recvs.size(); ++j) written_twice |= j != i && round.recvs[j].chunk == r.chunk;
      r.in_place = !r.reduce && !sent_now && !written_twice;
    }
  }
  return out;
}

bool holds_at_start(const CollectiveRequest& req, int rank, int block) {
  switch (req.op) {
    case CollectiveOp::AllReduce:
    case CollectiveOp::Reduce:
    case CollectiveOp::ReduceScatter: return true;
    case CollectiveOp::Broadcast: return rank == req.root;
    case CollectiveOp::AllGather: return rank == block;
    case CollectiveOp::AllToAll: return rank == block / req.ranks;
  }
  return false;
}

bool checked_at_end(const CollectiveRequest& req, int rank, int block) {
  switch (req.op) {
    case CollectiveOp::AllReduce:
    case CollectiveOp::AllGather:
    case CollectiveOp::Broadcast: return true;
    case CollectiveOp::Reduce: return rank == req.root;
    case CollectiveOp::ReduceScatter: return rank == block;
    case CollectiveOp::AllToAll: return rank == block % req.ranks;
  }
  return false;
}

float expected_value(const CollectiveRequest& req, int block, std::int64_t index) {
  switch (req.op) {
    case CollectiveOp::AllReduce:
    case CollectiveOp::Reduce:
    case CollectiveOp::ReduceScatter: {
      float sum = 0;  // small integers: exact in any order
      for (int r = 0; r < req.ranks; ++r) sum += input_value(r, block, index);
      return sum;
    }
    case CollectiveOp::Broadcast: return input_value(req.root, block, index);
    case CollectiveOp::AllGather: return input_value(block, block, index);
    case CollectiveOp::AllToAll: return input_value(block / req.ranks, block, index);
  }
  return kPoison;
}

void fill_inputs(const CollectiveRequest& req, int rank, const std::vector<ChunkElements>& layout,
                 std::vector<float>& workspace) {
  std::int64_t total = 0;
  for (const ChunkElements& c : layout) total = std::max(total, c.offset + c.count);
  workspace.resize(static_cast<std::size_t>(total));
  for (const ChunkElements& c : layout) {
    float* out = workspace.data() + c.offset;
    if (holds_at_start(req, rank, c.block)) {
      for (std::int64_t i = 0; i < c.count; ++i) out[i] = input_value(rank, c.block, c.first + i);
    } else {
      std::fill(out, out + c.count, kPoison);
    }
  }
}

std::int64_t count_wrong(const CollectiveRequest& req, int rank, const std::vector<ChunkElements>& layout,
                         const std::vector<float>& workspace) {
  const long long blocks = blocks_of(req);
  std::int64_t wrong = 0;
  std::array<float, kPeriod> expected{};
  for (const ChunkElements& c : layout) {
    if (c.block < 0 || c.block >= blocks)
      throw InvalidArgument("chunk names block " + std::to_string(c.block) + " outside [0, " + std::to_string(blocks) + ")");
    if (!checked_at_end(req, rank, c.block)) continue;
    if (c.offset < 0 || c.offset + c.count > static_cast<std::int64_t>(workspace.size()))
      throw InvalidArgument("chunk layout does not fit the workspace");
    // Expected values repeat with input_value's period: compute one period, then compare. This keeps
    // the reducing ops' check at O(floats + ranks), not O(floats x ranks).
    for (int i = 0; i < kPeriod; ++i) expected[i] = expected_value(req, c.block, c.first + i);
    const float* got = workspace.data() + c.offset;
    for (std::int64_t i = 0; i < c.count; ++i)
      if (got[i] != expected[static_cast<std::size_t>(i % kPeriod)]) ++wrong;
  }
  return wrong;
}

// Declared in collectives.hpp; defined here because this file is built with or without MPI.
std::vector<std::string> real_collective_algorithm_names() {
  std::vector<std::string> names = collective_algorithms().names();
  names.emplace_back(kNativeAlgorithm);
  return names;
}

}  // namespace twinbed::real
