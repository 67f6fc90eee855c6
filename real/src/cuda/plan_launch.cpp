// The GPU-free half of the CUDA Plan backend: op → launch, lanes, waits, memory (plan_launch.hpp).
#include "plan_launch.hpp"

#include <algorithm>
#include <climits>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <tuple>

#include "twinbed/core/error.hpp"
#include "twinbed/core/plan_exec.hpp"
#include "twinbed/core/profile.hpp"
#include "twinbed/kernels/payload.hpp"
#include "twinbed/real/collective_data.hpp"
#include "twinbed/real/tgc_codec.hpp"

namespace twinbed::real::cuda_detail {

using detail::ExchangePlan;
using detail::plan_techniques;
using detail::TechniquePlan;

std::string to_string(const Lane& lane) {
  switch (lane.kind) {
    case Lane::Kind::Compute: return "compute";
    case Lane::Kind::Collective: return "collective";
    case Lane::Kind::AsyncCollective: return "async collective";
    case Lane::Kind::Send: return "send" + std::string(lane.p2p_key >= 0 ? "+" : "") + std::to_string(lane.p2p_key);
    case Lane::Kind::Recv:
      return "recv" + std::string(-lane.p2p_key >= 0 ? "+" : "") + std::to_string(-lane.p2p_key);
  }
  return "?";
}

Bytes TgcExchange::bytes() const {
  const std::int64_t count = kept;
  const kernels::QuantSpec spec{params.bits == 0 ? 8 : params.bits, static_cast<std::size_t>(params.block_size)};
  const auto c = static_cast<std::size_t>(count);
  const Bytes codes = params.bits ? static_cast<Bytes>(kernels::quant_code_bytes(c, spec.bits) +
                                                       4 * kernels::quant_num_blocks(c, spec))
                                  : 0;
  // gradient, residual, sum; payload, output; indices, values, decoded; codes + scales; the hop's codes
  // and scales twice and its values.
  const Bytes hop_codes = hop > 0 ? static_cast<Bytes>(kernels::quant_code_bytes(static_cast<std::size_t>(hop), spec.bits) +
                                                       4 * kernels::quant_num_blocks(static_cast<std::size_t>(hop), spec))
                                  : 0;
  return 4 * (2 * n + (params.error_feedback ? n : 0) + payload_floats + output_floats() + 3 * count + hop) + codes +
         2 * hop_codes;
}

DType gemm_dtype(DType dtype) { return dtype == DType::FP8 ? DType::BF16 : dtype; }

bool CommKey::operator<(const CommKey& o) const {
  return std::tie(p2p, stream, group, p2p_key) < std::tie(o.p2p, o.stream, o.group, o.p2p_key);
}

std::vector<CommKey> plan_comms(const Plan& plan) {
  std::set<CommKey> keys;
  for (const Program& prog : plan.programs)
    for (const PlanOp& op : prog.ops) {
      if (op.kind == OpKind::Collective) keys.insert(CommKey{false, op.stream, op.group, 0});
      if (op.kind == OpKind::Send) keys.insert(CommKey{true, StreamKind::P2P, GroupKind::Tp, op.peer_offset});
      if (op.kind == OpKind::Recv) keys.insert(CommKey{true, StreamKind::P2P, GroupKind::Tp, -op.peer_offset});
    }
  return {keys.begin(), keys.end()};
}

namespace {

Bytes gemm_bytes(const OpLaunch& g) {
  const Bytes e = bytes_per_element(g.dtype);
  return g.batch * (g.m * g.k + g.k * g.n + g.m * g.n) * e;
}


std::int64_t nonneg(std::int64_t v) { return std::max<std::int64_t>(v, 0); }

// Compute op i as a technique op (tp's role): fills its launch and returns true, or returns false (an
// ordinary op, or a sparse GEMM the twins cannot run: it stays a dense stand-in).
bool plan_technique(std::uint32_t i, const OpCost& c, const TechniquePlan& tp, OpLaunch& l, LaunchPlan& lp) {
  auto technique = [&](TechniqueRole t, std::int32_t index) {
    l.kind = OpLaunch::Kind::Technique;
    l.technique = t;
    l.index = index;
    l.elements = nonneg(c.elements);
    l.every = std::max(1, c.every);
    return true;
  };
  switch (tp.role[i]) {
    case TechniqueRole::None: return false;
    case TechniqueRole::Compress:
      {  // cuda::topk and cuda::choose_bits return a count and a width
        const TgcExchange& x = lp.exchanges[static_cast<std::size_t>(tp.exchange[i])];
        l.host_sync = x.sparse() || x.params.adaptive;
      }
      return technique(TechniqueRole::Compress, tp.exchange[i]);
    case TechniqueRole::Refresh:
      l.host_sync = true;  // the mask twins return their active count
      return technique(TechniqueRole::Refresh, -1);
    case TechniqueRole::Requantize:
    case TechniqueRole::Decompress:
      return technique(tp.role[i], tp.exchange[i]);
    case TechniqueRole::MaskedStep:
    case TechniqueRole::LossScale:
    case TechniqueRole::Statistics:
      return technique(tp.role[i], -1);
    case TechniqueRole::SparseGemm: {
      const bool two_four = c.sparsity == OpCost::Sparsity::TwoFour;
      SparseGemmLaunch g;
      g.two_four = two_four;
      g.block = nonneg(c.block);
      g.density = c.density;
      g.m = nonneg(c.m);
      g.batch = std::max<std::int64_t>(1, c.batch);
      if (!two_four && (g.block <= 0 || g.block % 16 != 0)) return false;  // the BSR twin's 16×16 tiles
      const std::int64_t unit = two_four ? 4 : g.block;
      g.k = nonneg(c.k) / unit * unit;
      g.n = two_four ? nonneg(c.n) : nonneg(c.n) / unit * unit;
      if (g.m == 0 || g.n == 0 || g.k == 0) return false;
      const auto it = std::find(lp.sparse_gemms.begin(), lp.sparse_gemms.end(), g);
      if (it != lp.sparse_gemms.end()) return technique(TechniqueRole::SparseGemm, static_cast<std::int32_t>(it - lp.sparse_gemms.begin()));
      lp.sparse_gemms.push_back(g);
      return technique(TechniqueRole::SparseGemm, static_cast<std::int32_t>(lp.sparse_gemms.size() - 1));
    }
  }
  return false;
}

}  // namespace

LaunchPlan plan_launches(const Plan& plan, int rank, bool native_collectives) {
  if (rank < 0 || rank >= plan.world_size())
    throw InvalidArgument("plan_launches: rank " + std::to_string(rank) + " is outside the plan's " +
                          std::to_string(plan.world_size()) + " ranks");
  const Program& prog = plan.program(rank);
  const std::size_t n = prog.size();
  LaunchPlan lp;
  lp.lanes = {Lane{Lane::Kind::Compute, 0}, Lane{Lane::Kind::Collective, 0}};
  lp.comms = plan_comms(plan);
  lp.comm_buffer.assign(lp.comms.size(), 0);
  lp.ops.resize(n);
  lp.recv_offset.assign(n, 0);
  lp.arena = prog.arena.size;

  // The technique ops, found as for every real backend (technique_plan.hpp), and their state here.
  const TechniquePlan tp = plan_techniques(plan, rank);
  for (const ExchangePlan& x : tp.exchanges) {
    TgcExchange e;
    e.params = x.params;
    e.n = x.n;
    e.name = x.name;
    e.collective = x.collective;
    e.op = x.op;
    e.members = x.members;
    e.me = x.me;
    e.hop = x.requantize_elements;
    TgcParams sizing = e.params;
    sizing.error_feedback = false;  // sizes only: no residual allocated
    const TgcCodec codec(sizing, static_cast<std::size_t>(e.n));
    e.kept = static_cast<std::int64_t>(codec.kept());
    e.payload_floats = static_cast<std::int64_t>(codec.payload_floats(x.bits));
    e.carried = native_collectives && (x.op == CollectiveOp::AllGather || x.op == CollectiveOp::AllReduce);
    lp.exchanges.push_back(std::move(e));
  }
  lp.dsa.present = tp.dsa.present;
  lp.dsa.n = tp.dsa.n;
  lp.dsa.density = tp.dsa.density;
  lp.dsa.granularity = tp.dsa.granularity;
  lp.dsa.block = tp.dsa.block;
  lp.dsa.every = tp.dsa.every;
  lp.dsa.rest_bytes = tp.dsa.rest_bytes;
  lp.loss_scale_elements = tp.loss_scale_elements;
  lp.statistics_elements = tp.statistics_elements;

  auto lane_of = [&](const Lane& lane) {
    const auto it = std::find(lp.lanes.begin(), lp.lanes.end(), lane);
    if (it != lp.lanes.end()) return static_cast<std::uint32_t>(it - lp.lanes.begin());
    lp.lanes.push_back(lane);
    return static_cast<std::uint32_t>(lp.lanes.size() - 1);
  };
  auto comm_of = [&](const CommKey& key) {
    const auto it = std::lower_bound(lp.comms.begin(), lp.comms.end(), key);
    return static_cast<std::uint32_t>(it - lp.comms.begin());
  };
  auto stream_lane = [&](StreamKind s) {
    if (s == StreamKind::P2P) return lane_of(Lane{Lane::Kind::AsyncCollective, 0});
    return s == StreamKind::Collective ? 1u : 0u;
  };

  // Tensors: resident when allocated and never freed in the program (the model state).
  std::set<std::int32_t> freed;
  for (const PlanOp& op : prog.ops)
    if (op.kind == OpKind::Free) freed.insert(op.tensor);

  Bytes transient = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const PlanOp& op = prog.ops[i];
    OpLaunch& l = lp.ops[i];
    l.release_at_start = op.kind == OpKind::Send;
    switch (op.kind) {
      case OpKind::Compute: {
        const OpCost& cost = plan.costs.at(static_cast<std::size_t>(op.cost));
        l.lane = stream_lane(op.stream);
        l.flops = cost.flops;
        if (plan_technique(static_cast<std::uint32_t>(i), cost, tp, l, lp)) break;
        const bool gemm = cost.is_matmul() && (cost.kernel == OpCost::Kernel::None || cost.kernel == OpCost::Kernel::Lora);
        if (gemm && cost.m > 0 && cost.n > 0 && cost.k > 0) {
          l.kind = OpLaunch::Kind::Gemm;
          l.m = cost.m;
          l.n = cost.n;
          l.k = cost.k;
          l.batch = std::max<std::int64_t>(1, cost.batch);
          l.dtype = gemm_dtype(cost.dtype);
          if (cost.sparsity == OpCost::Sparsity::Block || cost.sparsity == OpCost::Sparsity::TwoFour) {
            l.k = std::max<std::int64_t>(1, std::llround(static_cast<double>(cost.k) * cost.density));
            l.stand_in = true;
          }
          if (l.m > INT_MAX || l.n > INT_MAX || l.k > INT_MAX)
            throw InvalidArgument("CUDA backend: GEMM '" + plan.names.at(op.name) + "' has a dimension beyond cuBLAS's int");
          lp.gemm_pool = std::max(lp.gemm_pool, gemm_bytes(l));
        } else {
          l.kind = OpLaunch::Kind::Stream;
          l.bytes = cost.bytes;
          l.stand_in = cost.kernel != OpCost::Kernel::None;
          lp.stream_pool = std::max(lp.stream_pool, l.bytes);
        }
        break;
      }
      case OpKind::Collective: {
        l.kind = OpLaunch::Kind::Collective;
        l.lane = stream_lane(op.stream);
        l.collective = op.collective;
        const int members = static_cast<int>(plan.group_members(rank, op.group).size());
        l.bytes = round_up_to_unit(op.collective, members, op.bytes);
        l.comm = comm_of(CommKey{false, op.stream, op.group, 0});
        lp.comm_buffer[l.comm] = std::max(lp.comm_buffer[l.comm], l.bytes);
        // An exchange's collective carries its payload where NCCL's own collective runs it.
        if (const std::int32_t x = tp.exchange[i]; x >= 0 && lp.exchanges[static_cast<std::size_t>(x)].carried) {
          l.index = x;
          l.bytes = 4 * lp.exchanges[static_cast<std::size_t>(x)].output_floats();
        }
        break;
      }
      case OpKind::Send:
      case OpKind::Recv: {
        const bool send = op.kind == OpKind::Send;
        const int key = send ? op.peer_offset : -op.peer_offset;
        l.kind = send ? OpLaunch::Kind::Send : OpLaunch::Kind::Recv;
        l.lane = lane_of(Lane{send ? Lane::Kind::Send : Lane::Kind::Recv, key});
        l.comm = comm_of(CommKey{true, StreamKind::P2P, GroupKind::Tp, key});
        l.peer = rank + op.peer_offset;
        l.bytes = op.bytes;
        if (op.bytes > static_cast<Bytes>(INT_MAX) * 64)
          throw InvalidArgument("CUDA backend: message '" + plan.names.at(op.name) + "' is too large");
        if (send) {
          lp.send_buffer = std::max(lp.send_buffer, op.bytes);
        } else {
          lp.recv_offset[i] = lp.recv_buffers;
          lp.recv_buffers += op.bytes;
        }
        break;
      }
      case OpKind::SendDone:
        l.kind = OpLaunch::Kind::SendDone;
        l.lane = stream_lane(op.stream);
        break;
      case OpKind::Alloc:
      case OpKind::Free: {
        l.kind = op.kind == OpKind::Alloc ? OpLaunch::Kind::Alloc : OpLaunch::Kind::Free;
        l.lane = stream_lane(op.stream);
        l.tensor = op.tensor;
        l.bytes = op.bytes;
        if (prog.arena.offset(op.tensor) >= 0) {
          l.placement = OpLaunch::Placement::Arena;
        } else if (!freed.contains(op.tensor)) {
          l.placement = OpLaunch::Placement::Resident;
          lp.resident += op.bytes;
        } else {
          l.placement = OpLaunch::Placement::Transient;
          transient += op.kind == OpKind::Alloc ? op.bytes : -op.bytes;
          lp.transient_peak = std::max(lp.transient_peak, transient);
        }
        break;
      }
    }
  }
  for (Bytes b : lp.comm_buffer) lp.collective_buffers += 2 * b;
  for (const TgcExchange& e : lp.exchanges) lp.technique_bytes += e.bytes();
  for (const SparseGemmLaunch& g : lp.sparse_gemms) lp.technique_bytes += g.bytes();
  lp.technique_bytes += lp.dsa.bytes() + 8 * lp.loss_scale_elements + 4 * lp.statistics_elements + 64;
  if (lp.dsa.present) lp.stream_pool = std::max(lp.stream_pool, lp.dsa.rest_bytes);

  // Waits: the execution core's edges that cross lanes (plan_exec.hpp's ExecGraph: dependencies and
  // FIFO successors; a FIFO successor is always on its predecessor's lane, so only dependencies cross).
  // Of several producers on one lane only the last is waited for: the lane is FIFO, so its event
  // completes after the others' (release events of one lane complete in program order).
  const ExecGraph graph(prog);
  std::vector<std::map<std::uint32_t, std::uint32_t>> last_on_lane(n);  // per op: lane -> latest producer
  for (std::uint32_t j = 0; j < n; ++j)
    for (std::uint32_t i : graph.released_by(j))
      if (lp.ops[i].lane != lp.ops[j].lane) {
        std::uint32_t& w = last_on_lane[i][lp.ops[j].lane];
        w = std::max(w, j);
      }
  for (std::size_t i = 0; i < n; ++i) {
    std::vector<std::uint32_t> w;
    for (const auto& [lane, j] : last_on_lane[i]) w.push_back(j);
    std::sort(w.begin(), w.end());
    lp.waits.insert(lp.waits.end(), w.begin(), w.end());
    lp.wait_begin.push_back(static_cast<std::uint32_t>(lp.waits.size()));
  }
  return lp;
}

}  // namespace twinbed::real::cuda_detail
