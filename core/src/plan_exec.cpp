#include "twinbed/core/plan_exec.hpp"

#include <algorithm>
#include <string>
#include <tuple>
#include <vector>

#include "twinbed/core/error.hpp"

namespace twinbed {

namespace {

constexpr std::uint32_t kNone = UINT32_MAX;
constexpr std::size_t kStreams = static_cast<std::size_t>(StreamKind::P2P) + 1;

// Orders `items` by key(item), a number below `keys`, keeping the order within each key (a counting
// sort: linear, where one sort by the full order would be n log n), and returns where each key's run
// begins (keys + 1 offsets). Callers then sort the runs: short, so cheaply.
template <class T, class Key>
std::vector<std::size_t> group_by_key(std::vector<T>& items, std::size_t keys, Key key) {
  std::vector<std::size_t> begin(keys + 1, 0);
  for (const T& x : items) ++begin[key(x) + 1];
  for (std::size_t k = 0; k < keys; ++k) begin[k + 1] += begin[k];
  std::vector<T> grouped(items.size());
  std::vector<std::size_t> next(begin.begin(), begin.end() - 1);
  for (T& x : items) grouped[next[key(x)]++] = std::move(x);
  items = std::move(grouped);
  return begin;
}

}  // namespace

ExecGraph::ExecGraph(const Program& program) {
  std::vector<std::uint32_t> node_of(program.size());
  for (std::uint32_t i = 0; i < node_of.size(); ++i) node_of[i] = i;
  *this = ExecGraph(program, node_of);
}

ExecGraph::ExecGraph(const Program& program, const std::vector<std::uint32_t>& node_of) {
  const std::size_t n = program.size();
  if (node_of.size() != n) throw InvalidArgument("ExecGraph: node_of has " + std::to_string(node_of.size()) + " entries for " + std::to_string(n) + " ops");
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t expect_same = i == 0 ? 0 : node_of[i - 1];
    if (node_of[i] != expect_same && node_of[i] != expect_same + 1)
      throw InvalidArgument("ExecGraph: node_of must start at 0 and step by 0 or 1 (op " + std::to_string(i) + ")");
    if (i > 0 && node_of[i] == node_of[i - 1] && program.ops[i].stream != program.ops[i - 1].stream)
      throw InvalidArgument("ExecGraph: ops " + std::to_string(i - 1) + " and " + std::to_string(i) +
                            " are merged but sit on different streams");
  }
  const std::size_t nodes = n == 0 ? 0 : node_of.back() + 1;

  // Edges (from, to): explicit dependencies and the FIFO order of each stream, between distinct nodes.
  std::vector<std::pair<std::uint32_t, std::uint32_t>> edges;
  edges.reserve(program.deps.size() + n);
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t k = 0; k < program.num_deps(i); ++k) {
      const std::uint32_t from = node_of[program.deps_of(i)[k]], to = node_of[i];
      if (from != to) edges.emplace_back(from, to);
    }
  }
  std::uint32_t last_on[kStreams] = {kNone, kNone, kNone};
  for (std::size_t i = 0; i < n; ++i) {
    const StreamKind s = program.ops[i].stream;
    if (!is_fifo(s)) continue;
    std::uint32_t& last = last_on[static_cast<std::size_t>(s)];
    if (last != kNone && last != node_of[i]) edges.emplace_back(last, node_of[i]);
    last = node_of[i];
  }
  // Successor lists: the edges grouped by `from`, each group sorted and rid of repeated edges.
  const std::vector<std::size_t> begin = group_by_key(edges, nodes, [](const auto& e) { return std::size_t{e.first}; });
  waits_.assign(nodes, 0);
  next_begin_.assign(nodes + 1, 0);
  next_.clear();
  next_.reserve(edges.size());
  for (std::size_t j = 0; j < nodes; ++j) {
    const auto first = edges.begin() + static_cast<std::ptrdiff_t>(begin[j]);
    const auto last = edges.begin() + static_cast<std::ptrdiff_t>(begin[j + 1]);
    std::sort(first, last);
    const auto distinct = std::unique(first, last);
    for (auto it = first; it != distinct; ++it) {
      next_.push_back(it->second);
      ++waits_[it->second];
    }
    next_begin_[j + 1] = static_cast<std::uint32_t>(next_.size());
  }
}

RankCursor::RankCursor(const ExecGraph& graph) : graph_(&graph), waits_(graph.size()), finished_(graph.size(), 0) {
  for (std::uint32_t i = 0; i < waits_.size(); ++i) waits_[i] = graph.waits(i);
}

CollectiveInstance collective_instance(const Plan& plan, int rank, const PlanOp& op) {
  if (op.kind != OpKind::Collective) throw InvalidArgument("collective_instance: a " + to_string(op.kind) + " op is no collective");
  const int g = plan.group_set(op.group).group_of_rank.at(static_cast<std::size_t>(rank));
  if (g < 0) throw InvalidArgument("rank " + std::to_string(rank) + " is in no " + to_string(op.group) + " group");
  return {op.group, g, op.tag};
}

void check_collective_streams(const Plan& plan, const std::string& backend) {
  // seq[p][g]: the streams of program p's collectives of kind g, in program order.
  std::vector<std::vector<std::vector<StreamKind>>> seq(plan.programs.size());
  for (std::size_t p = 0; p < plan.programs.size(); ++p) {
    seq[p].resize(kGroupKinds);
    for (const PlanOp& op : plan.programs[p].ops)
      if (op.kind == OpKind::Collective) seq[p][static_cast<std::size_t>(op.group)].push_back(op.stream);
  }
  for (int g = 0; g < kGroupKinds; ++g) {
    for (const std::vector<int>& members : plan.groups[static_cast<std::size_t>(g)].members) {
      if (members.empty()) continue;
      const auto p0 = static_cast<std::size_t>(plan.program_of_rank[static_cast<std::size_t>(members[0])]);
      for (int r : members) {
        const auto p = static_cast<std::size_t>(plan.program_of_rank[static_cast<std::size_t>(r)]);
        if (p != p0 && seq[p][static_cast<std::size_t>(g)] != seq[p0][static_cast<std::size_t>(g)])
          throw InvalidArgument("ranks " + std::to_string(members[0]) + " and " + std::to_string(r) + " of one " +
                                to_string(static_cast<GroupKind>(g)) +
                                " group put their collectives on different streams; the " + backend +
                                " needs them on the same streams");
      }
    }
  }
}

std::vector<int> representatives(const Plan& plan) {
  std::vector<int> rep(plan.programs.size(), -1);
  for (int r = 0; r < plan.world_size(); ++r) {
    int& x = rep[static_cast<std::size_t>(plan.program_of_rank[static_cast<std::size_t>(r)])];
    if (x < 0) x = r;
  }
  return rep;
}

Span span_for(int rank, std::uint32_t index, const PlanOp& op, Time start, Time end, double flops) {
  Span s;
  s.rank = rank;
  s.op = static_cast<std::int32_t>(index);
  s.stream = op.stream;
  s.kind = op.span;
  s.name = op.name;
  s.start = start;
  s.end = end;
  s.micro_batch = op.micro_batch;
  if (op.kind == OpKind::Compute) {
    s.flops = flops;
  } else {
    s.bytes = op.bytes;
  }
  return s;
}

bool span_before(const Span& a, const Span& b) {
  return std::tie(a.rank, a.start, a.end, a.stream, a.name, a.micro_batch, a.op) <
         std::tie(b.rank, b.start, b.end, b.stream, b.name, b.micro_batch, b.op);
}

void sort_spans(std::vector<Span>& spans) {
  // By rank first (spans arrive interleaved across ranks), then each rank's by the whole order: the
  // order one sort would give.
  int ranks = 0;
  for (const Span& s : spans) {
    if (s.rank < 0) throw InvalidArgument("sort_spans: a span of rank " + std::to_string(s.rank));
    ranks = std::max(ranks, s.rank + 1);
  }
  const std::vector<std::size_t> begin =
      group_by_key(spans, static_cast<std::size_t>(ranks), [](const Span& s) { return static_cast<std::size_t>(s.rank); });
  for (std::size_t r = 0; r < static_cast<std::size_t>(ranks); ++r) {
    std::sort(spans.begin() + static_cast<std::ptrdiff_t>(begin[r]), spans.begin() + static_cast<std::ptrdiff_t>(begin[r + 1]),
              span_before);
  }
}

Bytes memory_delta(const Program& program, const PlanOp& op) {
  if (op.kind != OpKind::Alloc && op.kind != OpKind::Free) return 0;
  if (program.arena.offset(op.tensor) >= 0) return 0;  // the arena already holds it
  return op.kind == OpKind::Alloc ? op.bytes : -op.bytes;
}

}  // namespace twinbed
