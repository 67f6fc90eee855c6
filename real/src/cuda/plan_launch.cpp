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
#include "twinbed/real/collective_data.hpp"

namespace twinbed::real::cuda_detail {

std::string to_string(const Lane& lane) {
  switch (lane.kind) {
    case Lane::Kind::Compute: return "compute";
    case Lane::Kind::Collective: return "collective";
    case Lane::Kind::Send: return "send" + std::string(lane.p2p_key >= 0 ? "+" : "") + std::to_string(lane.p2p_key);
    case Lane::Kind::Recv:
      return "recv" + std::string(-lane.p2p_key >= 0 ? "+" : "") + std::to_string(-lane.p2p_key);
  }
  return "?";
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

}  // namespace

LaunchPlan plan_launches(const Plan& plan, int rank) {
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
  auto stream_lane = [](StreamKind s) { return s == StreamKind::Collective ? 1u : 0u; };

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
