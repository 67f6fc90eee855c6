#include "twinbed/core/schedule.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>

#include "twinbed/core/error.hpp"

namespace twinbed {

namespace {

constexpr std::array<std::pair<CollectiveOp, const char*>, 6> kOpNames{{
    {CollectiveOp::AllReduce, "allreduce"},
    {CollectiveOp::ReduceScatter, "reducescatter"},
    {CollectiveOp::AllGather, "allgather"},
    {CollectiveOp::Broadcast, "broadcast"},
    {CollectiveOp::Reduce, "reduce"},
    {CollectiveOp::AllToAll, "alltoall"},
}};

// The checker's state: for every (rank, chunk), the set of ranks whose contribution that rank's copy
// of the chunk holds, as a bitset of `ranks` bits. The empty set means "not held". One flat vector, so
// a check on n ranks and c chunks costs n * c * ceil(n / 64) words.
class Holdings {
 public:
  Holdings(int ranks, int chunks)
      : words_((static_cast<std::size_t>(ranks) + 63) / 64),
        chunks_(static_cast<std::size_t>(chunks)),
        bits_(static_cast<std::size_t>(ranks) * chunks_ * words_, 0) {}

  std::size_t words() const { return words_; }
  std::uint64_t* at(int rank, int chunk) {
    return bits_.data() + (static_cast<std::size_t>(rank) * chunks_ + static_cast<std::size_t>(chunk)) * words_;
  }
  const std::uint64_t* at(int rank, int chunk) const {
    return bits_.data() + (static_cast<std::size_t>(rank) * chunks_ + static_cast<std::size_t>(chunk)) * words_;
  }
  void add(int rank, int chunk, int contributor) {
    at(rank, chunk)[contributor / 64] |= std::uint64_t{1} << (contributor % 64);
  }
  bool held(int rank, int chunk) const {
    const std::uint64_t* s = at(rank, chunk);
    return std::any_of(s, s + words_, [](std::uint64_t w) { return w != 0; });
  }

 private:
  std::size_t words_;
  std::size_t chunks_;
  std::vector<std::uint64_t> bits_;
};

// "{0, 2, 5}", shortened after a few members so messages stay one line.
std::string describe_set(const std::uint64_t* s, int ranks) {
  std::string out = "{";
  int shown = 0;
  int total = 0;
  for (int r = 0; r < ranks; ++r) {
    if (!((s[r / 64] >> (r % 64)) & 1)) continue;
    ++total;
    if (shown < 8) out += (shown++ ? ", " : "") + std::to_string(r);
  }
  if (total > shown) out += ", ... (" + std::to_string(total) + " ranks)";
  return out + "}";
}

// Collects the first few problems; later ones are only counted.
class ErrorLog {
 public:
  static constexpr std::size_t kKept = 10;
  void add(std::string message) {
    ++count_;
    if (errors_.size() < kKept) errors_.push_back(std::move(message));
  }
  bool empty() const { return count_ == 0; }
  std::vector<std::string> take() {
    if (count_ > errors_.size()) errors_.push_back(std::to_string(count_ - errors_.size()) + " more problems");
    return std::move(errors_);
  }

 private:
  std::vector<std::string> errors_;
  std::size_t count_ = 0;
};

// A write of one round, applied once every send of the round has read the round-start state.
struct PendingWrite {
  int dst;
  int chunk;
  int src;
  bool reduce;
};

// The blocks an op's chunks may name: n for reduce-scatter and all-gather, n*n for all-to-all, else 1.
long long block_count(CollectiveOp op, int n) {
  switch (op) {
    case CollectiveOp::ReduceScatter:
    case CollectiveOp::AllGather: return n;
    case CollectiveOp::AllToAll: return static_cast<long long>(n) * n;
    default: return 1;
  }
}

void set_initial_state(const CollectiveRequest& req, const std::vector<Chunk>& chunks, Holdings& state) {
  const int n = req.ranks;
  for (int c = 0; c < static_cast<int>(chunks.size()); ++c) {
    const int block = chunks[c].block;
    switch (req.op) {
      case CollectiveOp::AllReduce:
      case CollectiveOp::Reduce:
      case CollectiveOp::ReduceScatter:
        for (int r = 0; r < n; ++r) state.add(r, c, r);  // everyone contributes to everything
        break;
      case CollectiveOp::Broadcast: state.add(req.root, c, req.root); break;
      case CollectiveOp::AllGather: state.add(block, c, block); break;  // rank b starts with block b
      case CollectiveOp::AllToAll: state.add(block / n, c, block / n); break;  // s starts with s*n+d
    }
  }
}

// Checks the end state against the op's meaning (see check_schedule in the header).
void check_final_state(const CollectiveRequest& req, const std::vector<Chunk>& chunks, const Holdings& state,
                       ErrorLog& log) {
  const int n = req.ranks;
  const std::size_t words = state.words();
  std::vector<std::uint64_t> all(words, 0);
  for (int r = 0; r < n; ++r) all[r / 64] |= std::uint64_t{1} << (r % 64);
  std::vector<std::uint64_t> one(words, 0);
  auto just = [&](int r) -> const std::uint64_t* {
    std::fill(one.begin(), one.end(), 0);
    one[r / 64] |= std::uint64_t{1} << (r % 64);
    return one.data();
  };
  auto expect = [&](int rank, int c, const std::uint64_t* want, const char* what) {
    const std::uint64_t* got = state.at(rank, c);
    if (std::equal(got, got + words, want)) return;
    std::string msg = "rank " + std::to_string(rank) + " ends with chunk " + std::to_string(c) + " (block " +
                      std::to_string(chunks[c].block) + ") ";
    if (!state.held(rank, c)) {
      msg += "not held; expected " + std::string(what);
    } else {
      msg += "holding contributions " + describe_set(got, n) + "; expected " + what;
    }
    log.add(std::move(msg));
  };

  for (int c = 0; c < static_cast<int>(chunks.size()); ++c) {
    const int block = chunks[c].block;
    switch (req.op) {
      case CollectiveOp::AllReduce:
        for (int r = 0; r < n; ++r) expect(r, c, all.data(), "all ranks");
        break;
      case CollectiveOp::Reduce: expect(req.root, c, all.data(), "all ranks"); break;
      case CollectiveOp::Broadcast:
        for (int r = 0; r < n; ++r) expect(r, c, just(req.root), "the root's data");
        break;
      case CollectiveOp::ReduceScatter: expect(block, c, all.data(), "all ranks"); break;
      case CollectiveOp::AllGather:
        for (int r = 0; r < n; ++r) expect(r, c, just(block), "its owner's data");
        break;
      case CollectiveOp::AllToAll: expect(block % n, c, just(block / n), "its sender's data"); break;
    }
  }
}

}  // namespace

std::string to_string(CollectiveOp op) {
  for (const auto& [value, name] : kOpNames)
    if (value == op) return name;
  return "unknown";
}

CollectiveOp parse_collective_op(const std::string& name) {
  for (const auto& [value, known] : kOpNames)
    if (name == known) return value;
  throw UnknownName("collective op", name, collective_op_names());
}

std::vector<std::string> collective_op_names() {
  std::vector<std::string> out;
  for (const auto& entry : kOpNames) out.emplace_back(entry.second);
  return out;
}

double busbw_factor(CollectiveOp op, int ranks) {
  if (ranks < 1) throw InvalidArgument("busbw_factor: ranks must be >= 1 (got " + std::to_string(ranks) + ")");
  const double n = ranks;
  switch (op) {
    case CollectiveOp::AllReduce: return 2.0 * (n - 1) / n;
    case CollectiveOp::ReduceScatter:
    case CollectiveOp::AllGather:
    case CollectiveOp::AllToAll: return (n - 1) / n;
    case CollectiveOp::Broadcast:
    case CollectiveOp::Reduce: return 1.0;
  }
  return 1.0;
}

// Zero-byte chunks are ordinary chunks here: they are held, moved and checked like any other and add
// 0 to the byte counts. (Schedules keep them so that a schedule's shape does not depend on the size.)
ScheduleCheck check_schedule(const Schedule& schedule) {
  const CollectiveRequest& req = schedule.request();
  const std::vector<Chunk>& chunks = schedule.chunks();
  const int n = req.ranks;
  const int num_chunks = static_cast<int>(chunks.size());
  ScheduleCheck result;
  result.rounds = schedule.num_rounds();
  ErrorLog log;

  if (n < 1) {
    result.ok = false;
    result.errors.push_back("request has " + std::to_string(n) + " ranks; need at least 1");
    return result;
  }
  result.bytes_sent.assign(n, 0);
  result.bytes_received.assign(n, 0);
  result.bytes_reduced.assign(n, 0);
  if ((req.op == CollectiveOp::Broadcast || req.op == CollectiveOp::Reduce) && (req.root < 0 || req.root >= n)) {
    result.ok = false;
    result.errors.push_back("root " + std::to_string(req.root) + " is outside [0, " + std::to_string(n) + ")");
    return result;
  }
  const long long blocks = block_count(req.op, n);
  for (int c = 0; c < num_chunks; ++c) {
    if (chunks[c].block < 0 || chunks[c].block >= blocks)
      log.add("chunk " + std::to_string(c) + " names block " + std::to_string(chunks[c].block) + " outside [0, " +
              std::to_string(blocks) + ")");
    if (chunks[c].bytes < 0) log.add("chunk " + std::to_string(c) + " has negative size");
  }
  if (!log.empty()) {
    result.ok = false;
    result.errors = log.take();
    return result;
  }

  Holdings state(n, num_chunks);
  set_initial_state(req, chunks, state);
  const std::size_t words = state.words();

  std::vector<Transfer> transfers;
  std::vector<PendingWrite> writes;
  std::vector<std::uint64_t> staged;  // new sets, words per entry of `staged_at`
  std::vector<std::pair<int, int>> staged_at;
  for (int k = 0; k < result.rounds; ++k) {
    schedule.round(k, transfers);
    const std::string where = "round " + std::to_string(k) + ": ";
    writes.clear();
    // Every send reads the round-start state: validate and record, change nothing yet.
    for (const Transfer& t : transfers) {
      if (t.src < 0 || t.src >= n || t.dst < 0 || t.dst >= n) {
        log.add(where + "transfer " + std::to_string(t.src) + " -> " + std::to_string(t.dst) +
                " names a rank outside [0, " + std::to_string(n) + ")");
        continue;
      }
      if (t.chunk < 0 || t.chunk >= num_chunks) {
        log.add(where + "rank " + std::to_string(t.src) + " sends chunk " + std::to_string(t.chunk) +
                " outside [0, " + std::to_string(num_chunks) + ")");
        continue;
      }
      if (t.src == t.dst) {
        log.add(where + "rank " + std::to_string(t.src) + " sends chunk " + std::to_string(t.chunk) + " to itself");
        continue;
      }
      if (!state.held(t.src, t.chunk)) {
        log.add(where + "rank " + std::to_string(t.src) + " sends chunk " + std::to_string(t.chunk) +
                " it does not hold");
        continue;
      }
      const Bytes b = chunks[t.chunk].bytes;
      result.bytes_sent[t.src] += b;
      result.bytes_received[t.dst] += b;
      if (t.reduce) result.bytes_reduced[t.dst] += b;
      writes.push_back({t.dst, t.chunk, t.src, t.reduce});
    }

    // Group the writes by destination copy; stage each copy's new set.
    std::stable_sort(writes.begin(), writes.end(), [](const PendingWrite& a, const PendingWrite& b) {
      return std::pair(a.dst, a.chunk) < std::pair(b.dst, b.chunk);
    });
    staged.clear();
    staged_at.clear();
    for (std::size_t i = 0; i < writes.size();) {
      std::size_t j = i;
      int copies = 0;
      int reduces = 0;
      for (; j < writes.size() && writes[j].dst == writes[i].dst && writes[j].chunk == writes[i].chunk; ++j)
        (writes[j].reduce ? reduces : copies)++;
      const int dst = writes[i].dst;
      const int chunk = writes[i].chunk;
      const std::string target = "rank " + std::to_string(dst) + " chunk " + std::to_string(chunk);
      if (copies > 1 || (copies == 1 && reduces > 0)) {
        log.add(where + target + (copies > 1 ? " is overwritten by " + std::to_string(copies) + " senders"
                                             : " is both overwritten and reduced into"));
        i = j;
        continue;
      }
      const std::size_t base = staged.size();
      staged.resize(base + words);
      std::uint64_t* next = staged.data() + base;
      if (copies == 1) {
        const std::uint64_t* from = state.at(writes[i].src, chunk);
        std::copy(from, from + words, next);
      } else if (!state.held(dst, chunk)) {
        log.add(where + "rank " + std::to_string(writes[i].src) + " reduces chunk " + std::to_string(chunk) +
                " into rank " + std::to_string(dst) + ", which does not hold it");
        staged.resize(base);
        i = j;
        continue;
      } else {
        const std::uint64_t* own = state.at(dst, chunk);
        std::copy(own, own + words, next);
        for (std::size_t w = i; w < j; ++w) {
          const std::uint64_t* add = state.at(writes[w].src, chunk);
          bool overlap = false;
          for (std::size_t x = 0; x < words; ++x) overlap = overlap || (next[x] & add[x]) != 0;
          if (overlap) {
            log.add(where + "rank " + std::to_string(writes[w].src) + " reduces chunk " + std::to_string(chunk) +
                    " into rank " + std::to_string(dst) + " counting contributions twice (sender has " +
                    describe_set(add, n) + ", receiver has " + describe_set(next, n) + ")");
            continue;
          }
          for (std::size_t x = 0; x < words; ++x) next[x] |= add[x];
        }
      }
      staged_at.emplace_back(dst, chunk);
      i = j;
    }
    // End of round: apply.
    for (std::size_t s = 0; s < staged_at.size(); ++s) {
      const std::uint64_t* from = staged.data() + s * words;
      std::copy(from, from + words, state.at(staged_at[s].first, staged_at[s].second));
    }
  }

  check_final_state(req, chunks, state, log);
  result.ok = log.empty();
  result.errors = log.take();
  return result;
}

}  // namespace twinbed
