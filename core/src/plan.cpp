#include "twinbed/core/plan.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <sstream>
#include <tuple>
#include <unordered_map>

#include "twinbed/core/error.hpp"

namespace twinbed {

std::string to_string(OpKind k) {
  switch (k) {
    case OpKind::Compute: return "compute";
    case OpKind::Collective: return "collective";
    case OpKind::Send: return "send";
    case OpKind::Recv: return "recv";
    case OpKind::SendDone: return "send_done";
    case OpKind::Alloc: return "alloc";
    case OpKind::Free: return "free";
  }
  return "compute";
}

std::string to_string(GroupKind g) {
  switch (g) {
    case GroupKind::Tp: return "tp";
    case GroupKind::Dp: return "dp";
    case GroupKind::Pp: return "pp";
    case GroupKind::Ep: return "ep";
    case GroupKind::ExpertDp: return "expert_dp";
    case GroupKind::DpIntra: return "dp_intra";
    case GroupKind::DpInter: return "dp_inter";
    case GroupKind::Embedding: return "embedding";
    case GroupKind::Cp: return "cp";
    case GroupKind::ZeroShard: return "zero_shard";
    case GroupKind::ZeroReplica: return "zero_replica";
  }
  return "tp";
}

namespace {
constexpr ParamKind kParamKinds[] = {ParamKind::Qkv,       ParamKind::Proj,      ParamKind::Fc1,   ParamKind::Fc2,
                                     ParamKind::Router,    ParamKind::ExpertFc1, ParamKind::ExpertFc2,
                                     ParamKind::Norms,     ParamKind::Embedding, ParamKind::FinalNorm,
                                     ParamKind::Flat,      ParamKind::LoraA,     ParamKind::LoraB};
}  // namespace

std::string to_string(ParamKind k) {
  switch (k) {
    case ParamKind::Qkv: return "qkv";
    case ParamKind::Proj: return "proj";
    case ParamKind::Fc1: return "fc1";
    case ParamKind::Fc2: return "fc2";
    case ParamKind::Router: return "router";
    case ParamKind::ExpertFc1: return "expert_fc1";
    case ParamKind::ExpertFc2: return "expert_fc2";
    case ParamKind::Norms: return "norms";
    case ParamKind::Embedding: return "embedding";
    case ParamKind::FinalNorm: return "final_norm";
    case ParamKind::Flat: return "flat";
    case ParamKind::LoraA: return "lora_a";
    case ParamKind::LoraB: return "lora_b";
  }
  return "qkv";
}

std::vector<std::string> param_kind_names() {
  std::vector<std::string> out;
  for (ParamKind k : kParamKinds) out.push_back(to_string(k));
  return out;
}

ParamKind parse_param_kind(const std::string& name) {
  for (ParamKind k : kParamKinds) {
    if (to_string(k) == name) return k;
  }
  throw UnknownName("parameter kind", name, param_kind_names());
}

std::string to_string(TensorClass c) {
  switch (c) {
    case TensorClass::Weights: return "weights";
    case TensorClass::Grads: return "grads";
    case TensorClass::Optimizer: return "optimizer";
    case TensorClass::Activation: return "activation";
    case TensorClass::CommBuffer: return "comm_buffer";
    case TensorClass::Workspace: return "workspace";
    case TensorClass::TechniqueState: return "technique_state";
  }
  return "workspace";
}

std::int64_t set_elements(const std::vector<ParamSlice>& set) {
  std::int64_t n = 0;
  for (const ParamSlice& s : set) n += s.elements;
  return n;
}

std::vector<ParamSlice> shard_of(const std::vector<ParamSlice>& set, int shards) {
  if (shards < 1) throw InvalidArgument("shard_of: shards must be >= 1, got " + std::to_string(shards));
  std::vector<ParamSlice> out;
  out.reserve(set.size());
  for (const ParamSlice& s : set) out.push_back({s.tensor, (s.elements + shards - 1) / shards});
  return out;
}

Bytes set_bytes(const std::vector<ParamSlice>& set, const std::vector<ParamTensor>& params, Bytes (*per_element)(DType)) {
  Bytes bytes = 0;
  for (const ParamSlice& s : set) bytes += s.elements * per_element(params.at(static_cast<std::size_t>(s.tensor)).dtype);
  return bytes;
}

std::uint32_t Program::add(const PlanOp& op, std::initializer_list<std::uint32_t> op_deps) {
  ops.push_back(op);
  deps.insert(deps.end(), op_deps.begin(), op_deps.end());
  dep_begin.push_back(static_cast<std::uint32_t>(deps.size()));
  return static_cast<std::uint32_t>(ops.size() - 1);
}

std::uint32_t Program::add(const PlanOp& op, const std::vector<std::uint32_t>& op_deps) {
  ops.push_back(op);
  deps.insert(deps.end(), op_deps.begin(), op_deps.end());
  dep_begin.push_back(static_cast<std::uint32_t>(deps.size()));
  return static_cast<std::uint32_t>(ops.size() - 1);
}

void Program::add_dep_to_last(std::uint32_t dep) {
  deps.push_back(dep);
  dep_begin.back() = static_cast<std::uint32_t>(deps.size());
}

const std::vector<int>& Plan::group_members(int rank, GroupKind g) const {
  const GroupSet& set = group_set(g);
  int id = set.group_of_rank.at(static_cast<std::size_t>(rank));
  if (id < 0) throw InvalidArgument("rank " + std::to_string(rank) + " has no " + to_string(g) + " group");
  return set.members.at(static_cast<std::size_t>(id));
}

std::int64_t Plan::total_ops() const {
  std::int64_t n = 0;
  for (int p : program_of_rank) n += static_cast<std::int64_t>(programs.at(static_cast<std::size_t>(p)).size());
  return n;
}

double Plan::executed_flops() const {
  std::vector<double> per_program(programs.size(), 0);
  for (std::size_t p = 0; p < programs.size(); ++p) {
    for (const PlanOp& op : programs[p].ops) {
      if (op.kind != OpKind::Compute) continue;
      const OpCost& c = costs.at(static_cast<std::size_t>(op.cost));
      if (c.is_matmul()) per_program[p] += c.flops;
    }
  }
  double total = 0;
  for (int p : program_of_rank) total += per_program.at(static_cast<std::size_t>(p));
  return total;
}

namespace {

// A program's parameter tensors of one (expert, dtype): sharded as one flat buffer, as
// rank_model_state_bytes shards a stage's dense parameters over dp·cp (Layout::zero_shards) and its
// expert ones over dp·cp/ep.
struct StateGroup {
  DType dtype = DType::BF16;
  int shards = 1;
  std::int64_t trainable = 0, frozen = 0;  // elements
};

std::vector<StateGroup> state_groups(const std::vector<ParamTensor>& params, const Layout& layout) {
  std::map<std::pair<bool, DType>, StateGroup> groups;
  for (const ParamTensor& t : params) {
    const int shards = t.expert ? layout.grad_ranks() / layout.ep : layout.zero_shards();
    StateGroup& g = groups.try_emplace({t.expert, t.dtype}, StateGroup{t.dtype, shards}).first->second;
    (t.trainable ? g.trainable : g.frozen) += t.elements;
  }
  std::vector<StateGroup> out;
  for (const auto& [key, g] : groups) out.push_back(g);
  return out;
}

// The trainable elements of a group the optimizer updates on one rank (ZeRO stage >= 1: its shard).
std::int64_t updated_of(const StateGroup& g, const Layout& layout) {
  return layout.zero_stage >= 1 ? (g.trainable + g.shards - 1) / g.shards : g.trainable;
}

}  // namespace

ModelStateBytes model_state_of(const std::vector<ParamTensor>& params, const Layout& layout) {
  // Frozen tensors keep their parameters only.
  ModelStateBytes out;
  for (const StateGroup& g : state_groups(params, layout)) {
    const ModelStateBytes trained = model_state_bytes(g.trainable, g.dtype, layout.zero_stage, g.shards);
    const ModelStateBytes frozen = model_state_bytes(g.frozen, g.dtype, layout.zero_stage, g.shards);
    out.params += trained.params + frozen.params;
    out.grads += trained.grads / gradient_bytes_per_element(g.dtype) * gradient_bytes_per_element(layout, g.dtype);
    out.optimizer += trained.optimizer;
  }
  return out;
}

std::int64_t updated_params_of(const std::vector<ParamTensor>& params, const Layout& layout) {
  std::int64_t n = 0;
  for (const StateGroup& g : state_groups(params, layout)) n += updated_of(g, layout);
  return n;
}

Bytes updated_gradient_bytes_of(const std::vector<ParamTensor>& params, const Layout& layout) {
  Bytes bytes = 0;
  for (const StateGroup& g : state_groups(params, layout)) bytes += updated_of(g, layout) * gradient_bytes_per_element(layout, g.dtype);
  return bytes;
}

OpCost optimizer_step_cost(const std::vector<ParamTensor>& params, const Layout& layout, bool fused) {
  constexpr Bytes kAdam = 28;  // FP32 weight, momentum and variance read and written, the gradient read (plan.hpp)
  OpCost step;
  step.name = "optimizer_step";
  step.kind = OpCost::Kind::MemoryBound;
  step.phase = OpCost::Phase::BackwardWeight;
  step.dtype = DType::FP32;
  std::int64_t updated = 0;
  for (const StateGroup& g : state_groups(params, layout)) {
    const std::int64_t n = updated_of(g, layout);
    updated += n;
    Bytes per = kAdam;
    if (!fused) {
      const Bytes grad = gradient_bytes_per_element(layout, g.dtype);
      const Bytes weight = parameter_bytes_per_element(g.dtype);  // FP8 weights are kept in 16 bits
      per += 4 + grad;                      // the norm of the FP32 gradients; the gradient buffer zeroed
      if (weight < 4) {                     // 16-bit weights: an FP32 master copy
        if (grad < 4) per += grad + 4;      // gradients copied into FP32 main gradients
        per += 4 + weight;                  // the master weights copied into the model's
      }
    }
    step.bytes += per * n;
  }
  step.flops = (fused ? 16.0 : 18.0) * static_cast<double>(updated);  // AdamW's count, and the norm's (plan.hpp)
  return step;
}

SpanKind span_of(const OpCost& c) {
  switch (c.kind) {
    case OpCost::Kind::Gemm: return SpanKind::Gemm;
    case OpCost::Kind::Attention: return SpanKind::Attention;
    case OpCost::Kind::MemoryBound: return SpanKind::MemoryBound;
  }
  return SpanKind::Other;
}

PlanOp collective_op(CollectiveOp what, GroupKind group, Bytes bytes, StreamKind stream) {
  PlanOp op;
  op.kind = OpKind::Collective;
  op.stream = stream;
  op.span = SpanKind::Collective;
  op.collective = what;
  op.group = group;
  op.bytes = bytes;
  return op;
}

PlanOp alloc_op(TensorClass cls, std::int32_t tensor, Bytes bytes, std::uint32_t name, StreamKind stream) {
  PlanOp op;
  op.kind = OpKind::Alloc;
  op.stream = stream;
  op.tensor_class = cls;
  op.tensor = tensor;
  op.bytes = bytes;
  op.name = name;
  return op;
}

std::vector<GradientBucket> gradient_buckets(const std::vector<GradientReady>& ready, Bytes bucket_bytes, Bytes element_bytes) {
  if (element_bytes < 1) throw InvalidArgument("gradient_buckets: element_bytes must be >= 1");
  const std::int64_t capacity = std::max<std::int64_t>(1, bucket_bytes / element_bytes);
  std::vector<GradientBucket> out;
  GradientBucket open;
  for (const GradientReady& g : ready) {
    std::int64_t left = g.elements;
    while (left > 0) {
      const std::int64_t take = std::min(left, capacity - open.elements);
      open.slices.push_back({g.tensor, take});
      open.elements += take;
      open.ready_op = g.op;
      left -= take;
      if (open.elements == capacity) {
        out.push_back(std::move(open));
        open = GradientBucket{};
      }
    }
  }
  if (open.elements > 0) out.push_back(std::move(open));
  return out;
}

namespace {

// Collects problems; validate() throws with the first few.
struct Problems {
  std::vector<std::string> list;
  void add(const std::string& s) {
    if (list.size() < 8) list.push_back(s);
  }
};

void check_program(const Plan& plan, std::size_t pi, Problems& out) {
  const Program& p = plan.programs[pi];
  const std::string where = "program " + std::to_string(pi);
  if (p.dep_begin.size() != p.ops.size() + 1 || p.dep_begin.front() != 0 || p.dep_begin.back() != p.deps.size()) {
    out.add(where + ": dep_begin has " + std::to_string(p.dep_begin.size()) + " entries for " +
            std::to_string(p.ops.size()) + " ops");
    return;
  }
  for (std::size_t s = 0; s < p.param_sets.size(); ++s) {
    for (const ParamSlice& slice : p.param_sets[s]) {
      if (slice.tensor < 0 || static_cast<std::size_t>(slice.tensor) >= p.params.size() || slice.elements < 0 ||
          slice.elements > p.params[static_cast<std::size_t>(slice.tensor)].elements) {
        out.add(where + " param set " + std::to_string(s) + " names a tensor that does not exist or more of it than it has");
        break;
      }
    }
  }
  std::unordered_map<std::int32_t, Bytes> live;  // tensor id -> bytes
  std::set<std::pair<std::int32_t, std::int64_t>> sent;  // (peer offset, tag) of the Sends so far
  for (std::size_t i = 0; i < p.ops.size(); ++i) {
    const PlanOp& op = p.ops[i];
    if (op.kind == OpKind::Send) sent.emplace(op.peer_offset, op.tag);
    if (op.kind == OpKind::SendDone && !sent.contains({op.peer_offset, op.tag})) {
      out.add(where + " op " + std::to_string(i) + ": send_done of a message (peer offset " + std::to_string(op.peer_offset) +
              ", tag " + std::to_string(op.tag) + ") no earlier Send sends");
    }
    if (p.dep_begin[i] > p.dep_begin[i + 1]) out.add(where + " op " + std::to_string(i) + ": dep_begin decreases");
    for (std::uint32_t k = p.dep_begin[i]; k < p.dep_begin[i + 1] && k < p.deps.size(); ++k) {
      if (p.deps[k] >= i) {
        out.add(where + " op " + std::to_string(i) + " depends on op " + std::to_string(p.deps[k]) +
                ", which is not earlier");
      }
    }
    if (op.name >= plan.names.size()) out.add(where + " op " + std::to_string(i) + ": name index out of range");
    if (op.kind == OpKind::Compute && (op.cost < 0 || static_cast<std::size_t>(op.cost) >= plan.costs.size())) {
      out.add(where + " op " + std::to_string(i) + ": compute op without a valid cost");
    }
    if (op.bytes < 0) out.add(where + " op " + std::to_string(i) + ": negative bytes");
    if (op.params >= 0 && static_cast<std::size_t>(op.params) >= p.param_sets.size()) {
      out.add(where + " op " + std::to_string(i) + ": param set index out of range");
    }
    if (op.kind == OpKind::Alloc) {
      if (!live.emplace(op.tensor, op.bytes).second) {
        out.add(where + " op " + std::to_string(i) + ": tensor " + std::to_string(op.tensor) + " allocated twice");
      }
    } else if (op.kind == OpKind::Free) {
      auto it = live.find(op.tensor);
      if (it == live.end()) {
        out.add(where + " op " + std::to_string(i) + ": tensor " + std::to_string(op.tensor) + " freed but not live");
      } else {
        if (it->second != op.bytes) out.add(where + " op " + std::to_string(i) + ": free size differs from alloc");
        live.erase(it);
      }
    }
  }
}

// The collective sequence a program issues on one communicator kind.
using CollSeq = std::vector<std::tuple<CollectiveOp, Bytes, std::int64_t>>;

}  // namespace

void validate(const Plan& plan) {
  Problems out;
  const int world = plan.cluster.ranks;
  if (world < 1) out.add("cluster has no ranks");
  if (static_cast<int>(plan.program_of_rank.size()) != world) out.add("program_of_rank size differs from ranks");
  if (plan.groups.size() != static_cast<std::size_t>(kGroupKinds)) out.add("groups must hold one set per group kind");
  if (!out.list.empty()) {
    throw InvalidArgument("invalid plan: " + out.list.front());
  }
  for (int p : plan.program_of_rank) {
    if (p < 0 || static_cast<std::size_t>(p) >= plan.programs.size()) {
      throw InvalidArgument("invalid plan: program_of_rank names a program that does not exist");
    }
  }
  for (std::size_t pi = 0; pi < plan.programs.size(); ++pi) check_program(plan, pi, out);

  // Group sets: sizes, membership consistency.
  for (int g = 0; g < kGroupKinds; ++g) {
    const GroupSet& set = plan.groups[static_cast<std::size_t>(g)];
    if (static_cast<int>(set.group_of_rank.size()) != world) {
      out.add(to_string(static_cast<GroupKind>(g)) + " groups: group_of_rank size differs from ranks");
      continue;
    }
    for (std::size_t id = 0; id < set.members.size(); ++id) {
      for (int r : set.members[id]) {
        if (r < 0 || r >= world || set.group_of_rank[static_cast<std::size_t>(r)] != static_cast<int>(id)) {
          out.add(to_string(static_cast<GroupKind>(g)) + " group " + std::to_string(id) + " lists rank " +
                  std::to_string(r) + " inconsistently");
        }
      }
    }
  }
  if (!out.list.empty()) {
    std::ostringstream msg;
    msg << "invalid plan:";
    for (const auto& s : out.list) msg << "\n  " << s;
    throw InvalidArgument(msg.str());
  }

  // Per program: its sends and receives by peer offset, in program order (tag, bytes); its collective
  // sequence per group kind.
  struct P2P {
    std::map<std::int32_t, std::vector<std::pair<std::int64_t, Bytes>>> sends, recvs;
  };
  std::vector<P2P> p2p(plan.programs.size());
  std::vector<std::vector<CollSeq>> colls(plan.programs.size(), std::vector<CollSeq>(kGroupKinds));
  for (std::size_t pi = 0; pi < plan.programs.size(); ++pi) {
    for (const PlanOp& op : plan.programs[pi].ops) {
      if (op.kind == OpKind::Send) p2p[pi].sends[op.peer_offset].emplace_back(op.tag, op.bytes);
      if (op.kind == OpKind::Recv) p2p[pi].recvs[op.peer_offset].emplace_back(op.tag, op.bytes);
      if (op.kind == OpKind::Collective) {
        colls[pi][static_cast<std::size_t>(op.group)].emplace_back(op.collective, op.bytes, op.tag);
      }
    }
  }

  // Sends of rank r to r+d must match the receives of r+d from -d; check each (program, peer program,
  // offset) combination once.
  std::map<std::tuple<int, int, std::int32_t>, bool> checked;
  for (int r = 0; r < world && out.list.empty(); ++r) {
    int pr = plan.program_of_rank[static_cast<std::size_t>(r)];
    for (const auto& [d, sends] : p2p[static_cast<std::size_t>(pr)].sends) {
      int peer = r + d;
      if (peer < 0 || peer >= world || d == 0) {
        out.add("rank " + std::to_string(r) + " sends to rank " + std::to_string(peer) + ", outside the world or itself");
        break;
      }
      int pp = plan.program_of_rank[static_cast<std::size_t>(peer)];
      if (!checked.emplace(std::make_tuple(pr, pp, d), true).second) continue;
      const auto& recvs = p2p[static_cast<std::size_t>(pp)].recvs;
      auto it = recvs.find(-d);
      if (it == recvs.end() || it->second != sends) {
        out.add("rank " + std::to_string(r) + "'s sends to rank " + std::to_string(peer) +
                " do not match that rank's receives (tags and bytes, in order)");
      }
    }
    for (const auto& [d, recvs] : p2p[static_cast<std::size_t>(pr)].recvs) {
      int peer = r + d;
      if (peer < 0 || peer >= world || d == 0) {
        out.add("rank " + std::to_string(r) + " receives from rank " + std::to_string(peer) + ", outside the world or itself");
        break;
      }
      int pp = plan.program_of_rank[static_cast<std::size_t>(peer)];
      const auto& sends = p2p[static_cast<std::size_t>(pp)].sends;
      auto it = sends.find(-d);
      if (it == sends.end() || it->second != recvs) {
        out.add("rank " + std::to_string(r) + "'s receives from rank " + std::to_string(peer) +
                " do not match that rank's sends");
      }
    }
  }

  // Collectives: every member of a communicator issues the same sequence; ranks with a sequence on a
  // kind must have a group of that kind.
  for (int g = 0; g < kGroupKinds && out.list.empty(); ++g) {
    const GroupSet& set = plan.groups[static_cast<std::size_t>(g)];
    for (int r = 0; r < world; ++r) {
      const CollSeq& seq = colls[static_cast<std::size_t>(plan.program_of_rank[static_cast<std::size_t>(r)])][static_cast<std::size_t>(g)];
      if (seq.empty()) continue;
      int id = set.group_of_rank[static_cast<std::size_t>(r)];
      if (id < 0) {
        out.add("rank " + std::to_string(r) + " issues " + to_string(static_cast<GroupKind>(g)) +
                " collectives but has no such group");
        break;
      }
      int first = set.members[static_cast<std::size_t>(id)].front();
      if (first == r) continue;
      int pf = plan.program_of_rank[static_cast<std::size_t>(first)];
      if (pf == plan.program_of_rank[static_cast<std::size_t>(r)]) continue;
      if (colls[static_cast<std::size_t>(pf)][static_cast<std::size_t>(g)] != seq) {
        out.add("rank " + std::to_string(r) + "'s " + to_string(static_cast<GroupKind>(g)) +
                " collectives differ from those of rank " + std::to_string(first) + " in its group");
        break;
      }
    }
  }
  if (!out.list.empty()) {
    std::ostringstream msg;
    msg << "invalid plan:";
    for (const auto& s : out.list) msg << "\n  " << s;
    throw InvalidArgument(msg.str());
  }
}

}  // namespace twinbed
