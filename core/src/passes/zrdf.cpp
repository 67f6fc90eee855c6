#include "twinbed/core/passes/zrdf.hpp"

#include <algorithm>
#include <array>
#include <limits>
#include <unordered_map>

#include "pass_support.hpp"
#include "twinbed/core/memory_plan.hpp"

namespace twinbed {

namespace {

using nlohmann::json;

// The FIFO streams a vector clock tracks; P2P ops are asynchronous and order nothing by themselves.
int fifo_index(StreamKind s) {
  switch (s) {
    case StreamKind::Compute: return 0;
    case StreamKind::Collective: return 1;
    case StreamKind::P2P: return -1;
  }
  return -1;
}

struct Lifetimes {
  std::vector<std::int32_t> tensor;   // ids, in Alloc order
  std::vector<TensorLife> program;    // [Alloc, Free) in program order
  std::vector<TensorLife> ordered;    // from the first op not happening before the Alloc, to the Free (inclusive)
};

Lifetimes lifetimes(const Program& prog) {
  const std::size_t n = prog.ops.size();
  // clock[i][s]: how many ops of stream s happen before op i or are op i (deps and stream order).
  std::vector<std::array<std::uint32_t, 2>> clock(n, {0, 0});
  std::array<std::vector<std::uint32_t>, 2> on;  // program positions of each stream's ops
  std::array<std::int64_t, 2> last{-1, -1};
  for (std::uint32_t i = 0; i < n; ++i) {
    auto& c = clock[i];
    const auto join = [&](std::size_t d) {
      for (int s = 0; s < 2; ++s) c[static_cast<std::size_t>(s)] = std::max(c[static_cast<std::size_t>(s)], clock[d][static_cast<std::size_t>(s)]);
    };
    for (std::size_t k = 0; k < prog.num_deps(i); ++k) join(prog.deps_of(i)[k]);
    const int s = fifo_index(prog.ops[i].stream);
    if (s < 0) continue;
    const auto su = static_cast<std::size_t>(s);
    if (last[su] >= 0) join(static_cast<std::size_t>(last[su]));
    on[su].push_back(i);
    c[su] = static_cast<std::uint32_t>(on[su].size());
    last[su] = i;
  }
  // The earliest program position holding an op that does not happen before op i.
  const auto horizon = [&](std::uint32_t i) {
    std::int64_t h = i;
    for (std::size_t s = 0; s < 2; ++s) {
      const std::uint32_t before = clock[i][s] - (fifo_index(prog.ops[i].stream) == static_cast<int>(s) ? 1 : 0);
      if (before < on[s].size()) h = std::min<std::int64_t>(h, on[s][before]);
    }
    return h;
  };

  Lifetimes out;
  std::unordered_map<std::int32_t, std::size_t> index;  // tensor id -> position in out
  for (std::uint32_t i = 0; i < n; ++i) {
    const PlanOp& op = prog.ops[i];
    if (op.kind == OpKind::Alloc) {
      index[op.tensor] = out.tensor.size();
      out.tensor.push_back(op.tensor);
      out.program.push_back({op.bytes, i, kNeverFreed});
      out.ordered.push_back({op.bytes, horizon(i), kNeverFreed});
    } else if (op.kind == OpKind::Free) {
      const std::size_t t = index.at(op.tensor);
      out.program[t].free = i;
      out.ordered[t].free = static_cast<std::int64_t>(i) + 1;
    }
  }
  return out;
}

}  // namespace

ZrdfParams zrdf_params_from_json(const json& entry, const std::string& path) {
  using namespace json_read;
  require_object(entry, path);
  check_keys(entry, path, {"pass", "planner", "alignment_bytes"});
  ZrdfParams p;
  if (entry.contains("planner")) {
    p.planner = read_string(entry["planner"], path + "/planner");
    if (p.planner != "greedy_by_size" && p.planner != "greedy_by_breadth" && p.planner != "none") {
      fail(path + "/planner", "unknown planner '" + p.planner + "'; accepted: greedy_by_size, greedy_by_breadth, none");
    }
  }
  if (entry.contains("alignment_bytes")) p.alignment = read_int(entry["alignment_bytes"], path + "/alignment_bytes", 1, std::int64_t{1} << 30);
  return p;
}

json zrdf_params_to_json(const ZrdfParams& p) { return {{"planner", p.planner}, {"alignment_bytes", p.alignment}}; }

void apply_zrdf(Plan& plan, const ZrdfParams& p) {
  if (p.planner == "none") return;
  for (Program& prog : plan.programs) {
    const Lifetimes life = lifetimes(prog);
    const ArenaPlan placed = p.planner == "greedy_by_breadth" ? plan_greedy_by_breadth(life.ordered, p.alignment)
                                                               : plan_greedy_by_size(life.ordered, p.alignment);
    Arena arena;
    arena.size = placed.size;
    arena.planner = p.planner;
    arena.lower_bound = live_bytes_lower_bound(life.program, p.alignment);
    arena.no_reuse = no_reuse_bytes(life.program, p.alignment);
    arena.caching_allocator = caching_allocator_peak(life.program);
    std::int32_t max_id = -1;
    for (std::int32_t id : life.tensor) max_id = std::max(max_id, id);
    arena.offset_of_tensor.assign(static_cast<std::size_t>(max_id + 1), -1);
    for (std::size_t t = 0; t < life.tensor.size(); ++t) {
      arena.offset_of_tensor[static_cast<std::size_t>(life.tensor[t])] = placed.offsets[t];
    }
    prog.arena = std::move(arena);
  }
}

double zrdf_reuse_ratio(const Arena& arena) {
  return arena.no_reuse > 0 ? 1.0 - static_cast<double>(arena.size) / static_cast<double>(arena.no_reuse) : 0.0;
}

}  // namespace twinbed
