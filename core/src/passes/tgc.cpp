#include "twinbed/core/passes/tgc.hpp"

#include <cmath>
#include <set>

#include "pass_support.hpp"
#include "twinbed/kernels/payload.hpp"

namespace twinbed {

namespace {

using nlohmann::json;

OpCost kernel_op(const std::string& name, OpCost::Kernel kernel, std::int64_t elements, double bytes, const TgcParams& p) {
  OpCost c = passes::kernel_cost(name, kernel, elements, bytes);
  c.bits = p.width();
  c.keep_fraction = p.topk_fraction;
  c.block = p.block_size;
  c.error_feedback = p.error_feedback;
  c.adaptive = p.adaptive;
  return c;
}

int group_size(const Plan& plan, GroupKind g) {
  const GroupSet& set = plan.group_set(g);
  return set.members.empty() ? 1 : static_cast<int>(set.members.front().size());
}

class TgcRewrite {
 public:
  TgcRewrite(Plan& plan, const TgcParams& p, PlanTables& tables) : plan_(plan), p_(p), tables_(tables) {}

  Program rewrite(const Program& prog) {
    ProgramEditor e(prog);
    std::set<std::int32_t> compressed_sets;  // param sets whose gradients have a residual
    std::int64_t residual = 0;               // fp32 error-feedback elements
    for (std::uint32_t i = 0; i < prog.ops.size(); ++i) {
      const PlanOp& op = prog.ops[i];
      if (op.kind != OpKind::Collective || op.tensor_class != TensorClass::Grads) continue;
      if (op.group != GroupKind::Dp && op.group != GroupKind::ExpertDp) continue;
      if (op.params < 0) throw InvalidArgument("tgc: a gradient reduction without its parameters");
      const std::int64_t n = set_elements(prog.param_sets[static_cast<std::size_t>(op.params)]);
      const int shards = hierarchical(op.group) ? group_size(plan_, GroupKind::DpIntra) : 1;
      compress(e, i, n, shards);
      if (compressed_sets.insert(op.params).second) residual += n / shards;
    }
    if (p_.error_feedback && residual > 0) {
      e.insert_before(0, alloc_op(TensorClass::TechniqueState, e.new_tensor_id(), 4 * residual, tables_.name("tgc.error_feedback")));
    }
    return e.finish();
  }

 private:
  bool hierarchical(GroupKind g) const {
    return p_.hierarchy == TgcParams::Hierarchy::Hierarchical && g == GroupKind::Dp &&
           group_size(plan_, GroupKind::DpIntra) > 1 && group_size(plan_, GroupKind::DpInter) > 1;
  }

  // Reduction op i over n elements: dense intra-host reduce-scatter (hierarchical), compress, the
  // exchange, decompress, intra-host all-gather (hierarchical all-reduce).
  void compress(ProgramEditor& e, std::uint32_t i, std::int64_t n, int shards) {
    const PlanOp op = e.original().ops[i];
    const bool all_reduce = op.collective == CollectiveOp::AllReduce;
    const Bytes whole = op.bytes;  // n × gradient bytes: the buffer of an all-reduce, the array of a reduce-scatter
    const double ge = static_cast<double>(whole) / static_cast<double>(n);
    const GroupKind over = shards > 1 ? GroupKind::DpInter : op.group;
    const int ranks = group_size(plan_, over);
    const std::int64_t m = n / shards;  // elements this rank exchanges in compressed form
    const std::string base = plan_.names[op.name];

    std::vector<OpRef> deps = e.original_deps(i);
    auto on_stream = [&](PlanOp x, const std::string& name) {
      x.stream = StreamKind::Collective;
      x.name = tables_.name(base + "." + name);
      x.micro_batch = op.micro_batch;
      x.layer = op.layer;
      x.params = op.params;
      return x;
    };
    auto compute = [&](const std::string& name, OpCost::Kernel kernel, std::int64_t elements, double bytes) {
      PlanOp x = on_stream(PlanOp{}, name);
      x.kind = OpKind::Compute;
      x.span = SpanKind::MemoryBound;
      x.cost = tables_.cost(kernel_op("tgc." + name, kernel, elements, bytes, p_));
      return x;
    };
    auto before = [&](const PlanOp& x) {
      const OpRef r = e.insert_before(i, x, deps);
      deps = {r};
      return r;
    };
    if (shards > 1) {  // dense reduce-scatter within the host first
      PlanOp rs = on_stream(collective_op(CollectiveOp::ReduceScatter, GroupKind::DpIntra, whole, StreamKind::Collective), "intra_reducescatter");
      rs.tensor_class = TensorClass::Grads;
      before(rs);
    }

    const Bytes payload = tgc_payload_bytes(m, p_);
    const bool sparse = p_.topk_fraction < 1;
    const Bytes received = sparse ? payload * ranks : payload;
    PlanOp buffer = on_stream(alloc_op(TensorClass::CommBuffer, e.new_tensor_id(), received, 0), "payload");
    before(buffer);
    const double compress_bytes = static_cast<double>(m) * (ge + (p_.error_feedback ? 8 : 0) + (sparse ? 4 : 0) + (p_.adaptive ? 4 : 0)) +
                                  static_cast<double>(payload);
    before(compute("compress", OpCost::Kernel::Compress, m, compress_bytes));

    // The exchange: the reduction itself on the payload, or an all-gather of sparse payloads.
    PlanOp& x = e.op(i);
    x.group = over;
    if (sparse) {
      x.collective = CollectiveOp::AllGather;
      x.bytes = received;
    } else {
      x.bytes = payload;
    }
    e.set_deps(i, deps);

    std::vector<OpRef> after{OpRef::original(i)};
    auto then = [&](const PlanOp& y) {
      const OpRef r = e.insert_after(i, y, after);
      after = {r};
      return r;
    };
    if (!sparse && ranks > 1) {
      // Hop-by-hop reduction of a quantised payload: decode, add, encode at each of the R−1 steps.
      const double hops = static_cast<double>(ranks - 1) / ranks;
      const auto hop_elements = static_cast<std::int64_t>(std::ceil(hops * static_cast<double>(m)));
      then(compute("requantize", OpCost::Kernel::Compress, hop_elements, hops * (8.0 * static_cast<double>(m) + 2.0 * static_cast<double>(payload))));
    }
    const bool keeps_shard = !all_reduce;  // a reduce-scatter's rank keeps its 1/R of what it exchanged
    const double written = static_cast<double>(m) * ge / (keeps_shard ? ranks : 1);
    then(compute("decompress", OpCost::Kernel::Decompress, m, static_cast<double>(received) + written));
    PlanOp release = buffer;
    release.kind = OpKind::Free;
    then(release);
    if (shards > 1 && all_reduce) {
      PlanOp ag = on_stream(collective_op(CollectiveOp::AllGather, GroupKind::DpIntra, whole, StreamKind::Collective), "intra_allgather");
      ag.tensor_class = TensorClass::Grads;
      then(ag);
    }
    for (std::uint32_t d : e.dependents(i)) e.add_dep(OpRef::original(d), after.front());
  }

  Plan& plan_;
  const TgcParams& p_;
  PlanTables& tables_;
};

}  // namespace

Bytes tgc_payload_bytes(std::int64_t n, const TgcParams& p) {
  kernels::QuantSpec spec;
  spec.bits = p.width();
  spec.block = static_cast<std::size_t>(p.block_size);
  const auto count = static_cast<std::size_t>(n);
  if (p.topk_fraction < 1) {
    const auto k = static_cast<std::size_t>(std::ceil(p.topk_fraction * static_cast<double>(n)));
    return static_cast<Bytes>(p.width() == 0 ? kernels::sparse_payload_bytes(k) : kernels::sparse_quant_payload_bytes(k, spec));
  }
  if (p.width() == 0) return n * 4;  // unquantised fp32 values
  return static_cast<Bytes>(kernels::quant_payload_bytes(count, spec));
}

TgcParams tgc_params_from_json(const json& entry, const std::string& path) {
  using namespace json_read;
  require_object(entry, path);
  check_keys(entry, path, {"pass", "bits", "adaptive_bits", "adaptive_tolerance", "block_size", "topk_fraction", "error_feedback", "hierarchy"});
  TgcParams p;
  if (entry.contains("bits")) {
    const json& b = entry["bits"];
    const std::string where = path + "/bits";
    if (b.is_string() && b.get<std::string>() == "adaptive") {
      p.adaptive = true;
    } else if (!(b.is_string() && b.get<std::string>() == "none")) {
      if (!b.is_number_integer()) fail(where, "expected 2, 4, 8, 16, \"adaptive\" or \"none\", got " + got(b));
      p.bits = static_cast<int>(read_int(b, where, 2, 16));
      if (p.bits != 2 && p.bits != 4 && p.bits != 8 && p.bits != 16) fail(where, "expected 2, 4, 8, 16, \"adaptive\" or \"none\", got " + got(b));
    }
  }
  if (entry.contains("adaptive_bits")) {
    if (!p.adaptive) fail(path + "/adaptive_bits", "applies to \"bits\": \"adaptive\" only");
    p.adaptive_bits = static_cast<int>(read_int(entry["adaptive_bits"], path + "/adaptive_bits", 4, 16));
    if (p.adaptive_bits != 4 && p.adaptive_bits != 8 && p.adaptive_bits != 16) {
      fail(path + "/adaptive_bits", "the adaptive rule picks 4, 8 or 16 bits, got " + got(entry["adaptive_bits"]));
    }
  }
  if (entry.contains("adaptive_tolerance")) {
    if (!p.adaptive) fail(path + "/adaptive_tolerance", "applies to \"bits\": \"adaptive\" only");
    p.adaptive_tolerance = read_number(entry["adaptive_tolerance"], path + "/adaptive_tolerance", "a relative error in (0, 1]");
    if (!(p.adaptive_tolerance > 0 && p.adaptive_tolerance <= 1))
      fail(path + "/adaptive_tolerance", "expected a relative error in (0, 1], got " + got(entry["adaptive_tolerance"]));
  }
  if (entry.contains("block_size")) {
    p.block_size = read_int(entry["block_size"], path + "/block_size", 8, std::int64_t{1} << 30);
    if (p.block_size % 8 != 0) fail(path + "/block_size", "expected a positive multiple of 8 (a block starts on a byte), got " + got(entry["block_size"]));
  }
  if (entry.contains("topk_fraction")) {
    p.topk_fraction = read_number(entry["topk_fraction"], path + "/topk_fraction", "a fraction in (0, 1]");
    if (!(p.topk_fraction > 0 && p.topk_fraction <= 1)) fail(path + "/topk_fraction", "expected a fraction in (0, 1], got " + got(entry["topk_fraction"]));
  }
  if (entry.contains("error_feedback")) p.error_feedback = read_bool(entry["error_feedback"], path + "/error_feedback");
  if (entry.contains("hierarchy")) {
    const std::string h = read_string(entry["hierarchy"], path + "/hierarchy");
    if (h == "flat") p.hierarchy = TgcParams::Hierarchy::Flat;
    else if (h == "hierarchical") p.hierarchy = TgcParams::Hierarchy::Hierarchical;
    else fail(path + "/hierarchy", "unknown value '" + h + "'; accepted: flat, hierarchical");
  }
  return p;
}

json tgc_params_to_json(const TgcParams& p) {
  json j = {{"bits", p.adaptive ? json("adaptive") : p.bits == 0 ? json("none") : json(p.bits)},
            {"block_size", p.block_size},
            {"topk_fraction", p.topk_fraction},
            {"error_feedback", p.error_feedback},
            {"hierarchy", p.hierarchy == TgcParams::Hierarchy::Flat ? "flat" : "hierarchical"}};
  if (p.adaptive) {
    j["adaptive_bits"] = p.adaptive_bits;
    j["adaptive_tolerance"] = p.adaptive_tolerance;
  }
  return j;
}

void apply_tgc(Plan& plan, const TgcParams& p) {
  if (p.lossless()) return;
  if (p.hierarchy == TgcParams::Hierarchy::Hierarchical && plan.layout.grad_ranks() > 1 &&
      plan.group_set(GroupKind::DpIntra).members.empty()) {
    throw ConfigError("/hierarchy", "the cluster's hosts hold different numbers of each data-parallel group's ranks: "
                                    "no host-local groups to reduce within; use \"flat\"");
  }
  if (plan.layout.zero_replicas() > 1) {
    // The technique's own path: it is the combination that is refused.
    throw ConfigError("", "TGC compresses the data-parallel gradient reduction; hybrid sharding's (a "
                          "reduce-scatter within each shard group, then an all-reduce across the groups) is not "
                          "modelled: drop this technique, or set /layout/zero_shard_ranks to \"all\"");
  }
  PlanTables tables(plan);
  TgcRewrite rewrite(plan, p, tables);
  for (Program& prog : plan.programs) prog = rewrite.rewrite(prog);
}

}  // namespace twinbed
