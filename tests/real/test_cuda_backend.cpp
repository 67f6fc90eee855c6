// The CUDA Plan backend (real/cuda_backend.hpp).
//
// Everywhere, without a GPU: its planning (real/src/cuda/plan_launch.hpp) — lanes, waits, launches and
// memory — checked against the plan, and executed by an in-memory twin of the GPU: each lane a FIFO queue,
// an op startable at the head of its lane once the events it waits for have fired, a collective running
// when every member has started it, a Send and its Recv only together (NCCL's point-to-point calls block
// until the peer's runs, unlike the plan's eager Sends). Every plan must run to its end there: no lane
// layout or missing wait may deadlock the GPUs or let an op start before what it depends on.
// With a GPU (skipped otherwise, with the runtime's reason): small Plans on one GPU, whose span set
// equals the simulator's, as tests/real/test_same_spans.cpp checks for the CPU backend.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "plan_launch.hpp"
#include "support/plan_cases.hpp"
#include "twinbed/core/device.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/passes.hpp"
#include "twinbed/core/passes/zrdf.hpp"
#include "twinbed/core/plan.hpp"
#include "twinbed/core/plan_exec.hpp"
#include "twinbed/core/topology_builders.hpp"
#include "twinbed/real/collective_data.hpp"
#include "twinbed/real/cpu_backend.hpp"
#include "twinbed/real/cuda_backend.hpp"
#include "twinbed/real/cuda_collectives.hpp"
#include "twinbed/real/tgc_codec.hpp"
#include "twinbed/sim/plan_sim.hpp"

namespace twinbed {
namespace {

using real::cuda_detail::CommKey;
using real::cuda_detail::Lane;
using real::cuda_detail::LaunchPlan;
using real::cuda_detail::OpLaunch;
using real::cuda_detail::plan_launches;
using real::detail::TechniqueRole;
using real::cuda_detail::TgcExchange;

using Case = test::PlanCase;
using test::with_techniques;

std::vector<Case> cases(int n) { return test::plan_cases(n); }
const std::vector<const char*>& kTechniques = test::technique_cases();

// ---- the planning, op by op --------------------------------------------------------------------------

TEST(CudaPlanLaunch, OpsBecomeTheirLaunchesOnTheirStreamsLanes) {
  bool async_collectives = false;  // the tensor-parallel plans' backward collectives (plan.hpp's P2P stream)
  int send_dones = 0;
  for (int n : {1, 2, 4})
    for (const Case& c : cases(n))
      for (int r = 0; r < n; ++r) {
        const LaunchPlan lp = plan_launches(c.plan, r);
        const Program& prog = c.plan.program(r);
        ASSERT_EQ(lp.ops.size(), prog.size());
        ASSERT_GE(lp.lanes.size(), 2u);
        EXPECT_EQ(lp.lanes[0].kind, Lane::Kind::Compute);
        EXPECT_EQ(lp.lanes[1].kind, Lane::Kind::Collective);
        const std::string what = c.what + " rank " + std::to_string(r);
        for (std::size_t i = 0; i < prog.size(); ++i) {
          const PlanOp& op = prog.ops[i];
          const OpLaunch& l = lp.ops[i];
          ASSERT_LT(l.lane, lp.lanes.size()) << what;
          const Lane& lane = lp.lanes[l.lane];
          if (op.kind == OpKind::Send || op.kind == OpKind::Recv) {
            // One lane per direction and offset; the communicator of the sender's offset.
            EXPECT_EQ(lane.kind, op.kind == OpKind::Send ? Lane::Kind::Send : Lane::Kind::Recv) << what;
            const int key = op.kind == OpKind::Send ? op.peer_offset : -op.peer_offset;
            EXPECT_EQ(lane.p2p_key, key) << what;
            EXPECT_EQ(lp.comms.at(l.comm), (CommKey{true, StreamKind::P2P, GroupKind::Tp, key})) << what;
            EXPECT_EQ(l.peer, r + op.peer_offset) << what;
            EXPECT_EQ(l.bytes, op.bytes) << what;
            EXPECT_EQ(l.release_at_start, op.kind == OpKind::Send) << what;
            continue;
          }
          const Lane::Kind expected = op.stream == StreamKind::Collective ? Lane::Kind::Collective
                                      : op.stream == StreamKind::P2P        ? Lane::Kind::AsyncCollective
                                                                            : Lane::Kind::Compute;
          EXPECT_EQ(lane.kind, expected) << what;
          async_collectives = async_collectives || lane.kind == Lane::Kind::AsyncCollective;
          EXPECT_FALSE(l.release_at_start) << what;
          if (op.kind == OpKind::Collective) {
            EXPECT_EQ(l.kind, OpLaunch::Kind::Collective);
            const int members = static_cast<int>(c.plan.group_members(r, op.group).size());
            if (l.index >= 0) {  // carries a TGC payload: the payload's bytes (every member's for an all-gather)
              EXPECT_EQ(l.bytes, 4 * lp.exchanges.at(static_cast<std::size_t>(l.index)).output_floats()) << what;
            } else {
              EXPECT_EQ(l.bytes, real::round_up_to_unit(op.collective, members, op.bytes)) << what;
            }
            EXPECT_EQ(lp.comms.at(l.comm), (CommKey{false, op.stream, op.group, 0})) << what;
            EXPECT_GE(lp.comm_buffer.at(l.comm), l.bytes) << what;
          } else if (op.kind == OpKind::Compute) {
            const OpCost& cost = c.plan.costs.at(static_cast<std::size_t>(op.cost));
            EXPECT_EQ(l.flops, cost.flops) << what;
            if (l.kind == OpLaunch::Kind::Technique) {
              EXPECT_NE(l.technique, TechniqueRole::None) << what;
              EXPECT_EQ(l.elements, cost.elements) << what;
            } else if (l.kind == OpLaunch::Kind::Gemm) {
              EXPECT_TRUE(cost.is_matmul()) << what;
              EXPECT_EQ(l.m, cost.m);
              EXPECT_EQ(l.n, cost.n);
              EXPECT_EQ(l.batch, std::max<std::int64_t>(1, cost.batch));
              EXPECT_EQ(l.dtype, real::cuda_detail::gemm_dtype(cost.dtype));
              const bool sparse = cost.sparsity == OpCost::Sparsity::Block || cost.sparsity == OpCost::Sparsity::TwoFour;
              EXPECT_EQ(l.stand_in, sparse) << what;
              EXPECT_EQ(l.k, sparse ? std::max<std::int64_t>(1, std::llround(static_cast<double>(cost.k) * cost.density)) : cost.k) << what;
              EXPECT_GE(lp.gemm_pool, l.batch * (l.m * l.k + l.k * l.n + l.m * l.n) * bytes_per_element(l.dtype));
            } else {
              EXPECT_EQ(l.kind, OpLaunch::Kind::Stream) << what;
              EXPECT_EQ(l.bytes, cost.bytes) << what;
              EXPECT_EQ(l.stand_in, cost.kernel != OpCost::Kernel::None) << what;
              EXPECT_TRUE(cost.kernel == OpCost::Kernel::None || cost.kernel == OpCost::Kernel::Lora) << what;
              EXPECT_GE(lp.stream_pool, l.bytes);
            }
          } else if (op.kind == OpKind::SendDone) {  // launches nothing; its lane waits for the send's end
            EXPECT_EQ(l.kind, OpLaunch::Kind::SendDone) << what;
            ++send_dones;
          } else {  // Alloc, Free
            EXPECT_EQ(l.kind, op.kind == OpKind::Alloc ? OpLaunch::Kind::Alloc : OpLaunch::Kind::Free) << what;
            EXPECT_EQ(l.tensor, op.tensor);
            if (prog.arena.offset(op.tensor) >= 0) {
              EXPECT_EQ(l.placement, OpLaunch::Placement::Arena) << what;
            }
          }
        }
        EXPECT_EQ(lp.arena, prog.arena.size) << what;
      }
  EXPECT_TRUE(async_collectives);
  EXPECT_GT(send_dones, 0);  // the pipelined cases' blocking sends
}

// The technique ops run the kernels' CUDA twins in technique_ops.cpp's roles: every technique kernel op
// gets its role, a TGC exchange per compress op (its payload sized as real::TgcCodec sizes it) whose
// collective follows it and whose requantize / decompress ops come after that collective; DSA's state
// once per program; sparse GEMMs cut to whole blocks of the twins' tile.
TEST(CudaPlanLaunch, TechniqueOpsRunTheirKernelsRolesOnStateKeptPerRank) {
  int exchanges = 0, carried = 0, refreshes = 0, sparse = 0, loss = 0, stats = 0;
  for (int n : {1, 2, 4})
    for (const Case& c : cases(n))
      for (bool native : {true, false})
        for (int r = 0; r < n; ++r) {
          const LaunchPlan lp = plan_launches(c.plan, r, native);
          const Program& prog = c.plan.program(r);
          const std::string what = c.what + (native ? " native" : " schedule") + " rank " + std::to_string(r);
          Bytes state = lp.dsa.bytes() + 8 * lp.loss_scale_elements + 4 * lp.statistics_elements;
          for (const TgcExchange& e : lp.exchanges) {
            ++exchanges;
            state += e.bytes();
            ASSERT_GE(e.collective, 0) << what << ": a compress op with no collective after it";
            const PlanOp& coll = prog.ops.at(static_cast<std::size_t>(e.collective));
            EXPECT_EQ(coll.kind, OpKind::Collective) << what;
            EXPECT_EQ(e.members, c.plan.group_members(r, coll.group)) << what;
            EXPECT_EQ(e.members.at(static_cast<std::size_t>(e.me)), r) << what;
            const real::TgcCodec codec(TgcParams{.bits = e.params.bits, .block_size = e.params.block_size,
                                                 .topk_fraction = e.params.topk_fraction, .error_feedback = false},
                                       static_cast<std::size_t>(e.n));
            EXPECT_EQ(e.payload_floats, static_cast<std::int64_t>(codec.payload_floats(e.params.bits))) << what;
            EXPECT_EQ(e.kept, static_cast<std::int64_t>(codec.kept())) << what;
            const bool carries = native && (e.op == CollectiveOp::AllGather || e.op == CollectiveOp::AllReduce);
            EXPECT_EQ(e.carried, carries) << what;
            carried += e.carried ? 1 : 0;
            const OpLaunch& cl = lp.ops.at(static_cast<std::size_t>(e.collective));
            EXPECT_EQ(cl.index >= 0, carries) << what;
            // What the collective carries the plan charged (the tgc pass sizes its collectives by payload.hpp):
            // at most the plan's bytes rounded up to whole floats per member.
            if (carries) {
              EXPECT_LE(cl.bytes, real::round_up_to_unit(coll.collective, static_cast<int>(e.members.size()), coll.bytes) + 4 * static_cast<Bytes>(e.members.size())) << what;
            }
          }
          for (const auto& g : lp.sparse_gemms) {
            state += g.bytes();
            const std::int64_t unit = g.two_four ? 4 : g.block;
            EXPECT_EQ(g.k % unit, 0) << what;
            if (!g.two_four) {
              EXPECT_EQ(g.n % unit, 0) << what;
              EXPECT_EQ(g.block % 16, 0) << what;
            }
            EXPECT_GT(g.m * g.n * g.k, 0) << what;
          }
          EXPECT_GE(lp.technique_bytes, state) << what;
          for (std::uint32_t i = 0; i < prog.size(); ++i) {
            const PlanOp& op = prog.ops[i];
            const OpLaunch& l = lp.ops[i];
            if (op.kind != OpKind::Compute) continue;
            const OpCost& cost = c.plan.costs.at(static_cast<std::size_t>(op.cost));
            using K = OpCost::Kernel;
            switch (cost.kernel) {
              case K::Compress:
                EXPECT_EQ(l.technique, cost.name == "tgc.requantize" ? TechniqueRole::Requantize : TechniqueRole::Compress) << what;
                break;
              case K::Decompress: EXPECT_EQ(l.technique, TechniqueRole::Decompress) << what; break;
              case K::MaskRefresh: EXPECT_EQ(l.technique, TechniqueRole::Refresh) << what; ++refreshes; break;
              case K::MaskedStep: EXPECT_EQ(l.technique, TechniqueRole::MaskedStep) << what; break;
              case K::LossScale: EXPECT_EQ(l.technique, TechniqueRole::LossScale) << what; ++loss; break;
              case K::Precision: EXPECT_EQ(l.technique, TechniqueRole::Statistics) << what; ++stats; break;
              case K::Lora:
              case K::None:
                if (l.technique == TechniqueRole::SparseGemm) ++sparse;
                else EXPECT_EQ(l.technique, TechniqueRole::None) << what;
                break;
            }
            if (l.technique == TechniqueRole::Decompress || l.technique == TechniqueRole::Requantize) {
              const TgcExchange& e = lp.exchanges.at(static_cast<std::size_t>(l.index));
              EXPECT_LT(e.collective, static_cast<std::int32_t>(i)) << what << ": decodes before its collective ran";
            }
            if (l.technique == TechniqueRole::Refresh || l.technique == TechniqueRole::MaskedStep) {
              EXPECT_TRUE(lp.dsa.present) << what;
              EXPECT_EQ(lp.dsa.n, cost.elements) << what;
            }
            if (l.technique == TechniqueRole::LossScale) {
              EXPECT_LE(l.elements, lp.loss_scale_elements) << what;
            }
            if (l.technique == TechniqueRole::Statistics) {
              EXPECT_LE(l.elements, lp.statistics_elements) << what;
            }
          }
        }
  // Every kind of technique op appears in the cases, and some payloads are carried.
  EXPECT_GT(exchanges, 0);
  EXPECT_GT(carried, 0);
  EXPECT_GT(refreshes, 0);
  EXPECT_GT(sparse, 0);
  EXPECT_GT(loss, 0);
  EXPECT_GT(stats, 0);
}

TEST(CudaPlanLaunch, TopKPayloadsTravelByAllGatherAndCarryEveryMembersPayload) {
  const Case c = cases(2).front();
  const Plan plan = with_techniques(c.plan, kTechniques[0]);  // top-k 0.1 at 8 bits: all-gathered payloads
  for (int r = 0; r < 2; ++r) {
    const LaunchPlan lp = plan_launches(plan, r);
    ASSERT_FALSE(lp.exchanges.empty());
    for (const TgcExchange& e : lp.exchanges) {
      EXPECT_TRUE(e.sparse());
      EXPECT_EQ(e.op, CollectiveOp::AllGather);
      EXPECT_TRUE(e.carried);
      EXPECT_EQ(e.output_floats(), 2 * e.payload_floats);
      EXPECT_EQ(lp.ops.at(static_cast<std::size_t>(e.collective)).bytes, 8 * e.payload_floats);
    }
    // Under a registered schedule the payloads are not carried: the plan's bytes move.
    for (const TgcExchange& e : plan_launches(plan, r, false).exchanges) EXPECT_FALSE(e.carried);
  }
}

TEST(CudaPlanLaunch, Fp8GemmsRunAsBf16AndOtherDtypesAsThemselves) {
  EXPECT_EQ(real::cuda_detail::gemm_dtype(DType::FP8), DType::BF16);
  for (DType t : {DType::FP32, DType::TF32, DType::BF16, DType::FP16}) EXPECT_EQ(real::cuda_detail::gemm_dtype(t), t);
}

TEST(CudaPlanLaunch, ModelStateIsResidentAndEveryTransientTensorIsFreed) {
  for (const Case& c : cases(2)) {
    const LaunchPlan lp = plan_launches(c.plan, 0);
    const Program& prog = c.plan.program(0);
    std::map<std::int32_t, int> transient_live;
    Bytes resident = 0;
    for (std::size_t i = 0; i < prog.size(); ++i) {
      const OpLaunch& l = lp.ops[i];
      if (l.kind != OpLaunch::Kind::Alloc && l.kind != OpLaunch::Kind::Free) continue;
      if (l.placement == OpLaunch::Placement::Resident) {
        EXPECT_EQ(l.kind, OpLaunch::Kind::Alloc) << c.what;  // never freed
        resident += l.bytes;
      }
      if (l.placement == OpLaunch::Placement::Transient) transient_live[l.tensor] += l.kind == OpLaunch::Kind::Alloc ? 1 : -1;
    }
    EXPECT_EQ(resident, lp.resident) << c.what;
    for (const auto& [tensor, live] : transient_live) EXPECT_EQ(live, 0) << c.what << " tensor " << tensor;
    // The resident and arena bytes plus the transient peak are the plan's own memory peak.
    EXPECT_GE(lp.arena + lp.resident + lp.transient_peak, 0);
  }
}

TEST(CudaPlanLaunch, CommunicatorsAreTheSameListOnEveryRank) {
  for (const Case& c : cases(4)) {
    const std::vector<CommKey> comms = real::cuda_detail::plan_comms(c.plan);
    EXPECT_TRUE(std::is_sorted(comms.begin(), comms.end())) << c.what;
    for (int r = 0; r < 4; ++r) EXPECT_EQ(plan_launches(c.plan, r).comms, comms) << c.what;
  }
  EXPECT_THROW(plan_launches(cases(2).front().plan, 2), InvalidArgument);
}

TEST(CudaPlanLaunch, EveryCrossLaneDependencyIsAWaitOnItsLanesLatestProducer) {
  for (const Case& c : cases(4))
    for (int r = 0; r < 4; ++r) {
      const LaunchPlan lp = plan_launches(c.plan, r);
      const Program& prog = c.plan.program(r);
      for (std::size_t i = 0; i < prog.size(); ++i) {
        std::map<std::uint32_t, std::uint32_t> waited;  // lane -> op waited for
        for (std::size_t w = 0; w < lp.num_waits(i); ++w) {
          const std::uint32_t j = lp.waits_of(i)[w];
          EXPECT_LT(j, i) << c.what;  // program order is topological: the event exists when waited for
          EXPECT_NE(lp.ops[j].lane, lp.ops[i].lane) << c.what;
          EXPECT_TRUE(waited.emplace(lp.ops[j].lane, j).second) << c.what << ": two waits on one lane";
        }
        for (std::size_t d = 0; d < prog.num_deps(i); ++d) {
          const std::uint32_t j = prog.deps_of(i)[d];
          if (lp.ops[j].lane == lp.ops[i].lane) continue;  // FIFO
          const auto it = waited.find(lp.ops[j].lane);
          ASSERT_NE(it, waited.end()) << c.what << " rank " << r << " op " << i << " ignores dep " << j;
          EXPECT_GE(it->second, j) << c.what;  // a later op of that lane: its event fires after j's
        }
      }
    }
}

// ---- the in-memory twin of the GPUs ----------------------------------------------------------------------

// Runs every rank's launches as the GPUs would (see the file's comment) and returns the ops that never
// ran (empty: the plan completes). Each step lets every startable op start; an op "runs" when it starts
// and, for Send/Recv/Collective, when its partners have started too. Start and end events fire then.
// The host enqueues in program order; an op with host_sync (a twin returning a count, which also
// cudaMallocs and cudaFrees its scratch: device-wide synchronisations) is enqueued only when every earlier
// op has ended, and the next op only when it has: only enqueued ops can start.
std::vector<std::string> stuck_ops(const Plan& plan) {
  const int n = plan.world_size();
  std::vector<LaunchPlan> lps;
  for (int r = 0; r < n; ++r) lps.push_back(plan_launches(plan, r));
  struct RankState {
    std::vector<std::vector<std::uint32_t>> lane_ops;  // per lane, its ops in program order
    std::vector<std::size_t> head;                     // per lane
    std::vector<char> started, done;                   // per op
    std::uint32_t enqueued = 0;                        // ops [0, enqueued) are on their lanes
  };
  std::vector<RankState> st(static_cast<std::size_t>(n));
  for (int r = 0; r < n; ++r) {
    RankState& s = st[static_cast<std::size_t>(r)];
    const LaunchPlan& lp = lps[static_cast<std::size_t>(r)];
    s.lane_ops.resize(lp.lanes.size());
    s.head.assign(lp.lanes.size(), 0);
    for (std::uint32_t i = 0; i < lp.ops.size(); ++i) s.lane_ops[lp.ops[i].lane].push_back(i);
    s.started.assign(lp.ops.size(), 0);
    s.done.assign(lp.ops.size(), 0);
  }
  // Partners: collectives by (communicator, group index, sequence on that communicator); messages by
  // (sender, receiver, sequence of that pair).
  std::map<std::tuple<std::uint32_t, int, int>, std::vector<std::pair<int, std::uint32_t>>> coll;  // -> members' ops
  std::map<std::tuple<int, int, int>, std::vector<std::pair<int, std::uint32_t>>> msg;
  for (int r = 0; r < n; ++r) {
    const LaunchPlan& lp = lps[static_cast<std::size_t>(r)];
    const Program& prog = plan.program(r);
    std::map<std::uint32_t, int> coll_seq;
    std::map<std::pair<int, int>, int> msg_seq;
    for (std::uint32_t i = 0; i < lp.ops.size(); ++i) {
      const OpLaunch& l = lp.ops[i];
      if (l.kind == OpLaunch::Kind::Collective) {
        const int group = plan.group_set(prog.ops[i].group).group_of_rank[static_cast<std::size_t>(r)];
        coll[{l.comm, group, coll_seq[l.comm]++}].push_back({r, i});
      } else if (l.kind == OpLaunch::Kind::Send) {
        msg[{r, l.peer, msg_seq[{r, l.peer}]++}].push_back({r, i});
      } else if (l.kind == OpLaunch::Kind::Recv) {
        msg[{l.peer, r, msg_seq[{l.peer, r}]++}].push_back({r, i});
      }
    }
  }
  std::map<std::pair<int, std::uint32_t>, const std::vector<std::pair<int, std::uint32_t>>*> partners;
  for (const auto& [key, members] : coll)
    for (const auto& m : members) partners[m] = &members;
  for (const auto& [key, members] : msg)
    for (const auto& m : members) partners[m] = &members;

  auto startable = [&](int r, std::uint32_t i) {
    const LaunchPlan& lp = lps[static_cast<std::size_t>(r)];
    const RankState& s = st[static_cast<std::size_t>(r)];
    for (std::size_t w = 0; w < lp.num_waits(i); ++w) {
      const std::uint32_t j = lp.waits_of(i)[w];
      const bool at_start = lp.ops[j].release_at_start && lp.ops[i].kind != OpLaunch::Kind::SendDone;
      if (!(at_start ? s.started[j] : s.done[j])) return false;
    }
    return true;
  };
  for (bool progress = true; progress;) {
    progress = false;
    for (int r = 0; r < n; ++r) {
      RankState& s = st[static_cast<std::size_t>(r)];
      const LaunchPlan& lp = lps[static_cast<std::size_t>(r)];
      auto all_done_before = [&](std::uint32_t i) {
        return std::all_of(s.done.begin(), s.done.begin() + i, [](char d) { return d != 0; });
      };
      while (s.enqueued < lp.ops.size()) {
        const std::uint32_t i = s.enqueued;
        const bool syncs = lp.ops[i].host_sync || (i > 0 && lp.ops[i - 1].host_sync);
        if (syncs && !all_done_before(i)) break;
        ++s.enqueued;
        progress = true;
      }
      for (std::size_t lane = 0; lane < s.lane_ops.size(); ++lane) {
        while (s.head[lane] < s.lane_ops[lane].size()) {
          const std::uint32_t i = s.lane_ops[lane][s.head[lane]];
          if (i >= s.enqueued) break;
          if (!s.started[i]) {
            if (!startable(r, i)) break;
            s.started[i] = 1;
            progress = true;
          }
          const auto p = partners.find({r, i});
          bool all = true;
          if (p != partners.end())
            for (const auto& [pr, pi] : *p->second) all = all && st[static_cast<std::size_t>(pr)].started[pi];
          if (p != partners.end() && p->second->size() < 2 && lps[static_cast<std::size_t>(r)].ops[i].kind != OpLaunch::Kind::Collective)
            all = false;  // a message without its other end never completes
          if (!all) break;
          if (p != partners.end())
            for (const auto& [pr, pi] : *p->second) st[static_cast<std::size_t>(pr)].done[pi] = 1;
          s.done[i] = 1;
          ++s.head[lane];
          progress = true;
        }
      }
    }
    // Partners completed on another rank's turn: advance heads already done.
    for (RankState& s : st)
      for (std::size_t lane = 0; lane < s.lane_ops.size(); ++lane)
        while (s.head[lane] < s.lane_ops[lane].size() && s.done[s.lane_ops[lane][s.head[lane]]]) {
          ++s.head[lane];
          progress = true;
        }
  }
  std::vector<std::string> stuck;
  for (int r = 0; r < n; ++r)
    for (std::size_t i = 0; i < st[static_cast<std::size_t>(r)].done.size(); ++i)
      if (!st[static_cast<std::size_t>(r)].done[i])
        stuck.push_back("rank " + std::to_string(r) + " op " + std::to_string(i) + " (" +
                        to_string(plan.program(r).ops[i].kind) + " " + plan.names.at(plan.program(r).ops[i].name) + ")");
  return stuck;
}

TEST(CudaPlanLaunch, EveryPlanRunsToItsEndOnTheTwinOfTheGpus) {
  for (int n : {1, 2, 4})
    for (const Case& c : cases(n)) {
      const std::vector<std::string> stuck = stuck_ops(c.plan);
      EXPECT_TRUE(stuck.empty()) << c.what << " on " << n << " ranks: " << stuck.size() << " ops never ran, first "
                                 << (stuck.empty() ? "" : stuck.front());
    }
}

TEST(CudaPlanLaunch, TwoRanksSendingToEachOtherFirstStillMeetTheirReceives) {
  // Each of two ranks sends to the other, then receives: with NCCL's blocking calls on one FIFO lane each
  // would wait for the other's receive forever. The separate send and receive lanes let both meet.
  Plan plan = reduction_plan(ClusterShape{2, 2}, 1024, DType::FP32);
  Program prog;
  PlanOp send;
  send.kind = OpKind::Send;
  send.stream = StreamKind::P2P;
  send.span = SpanKind::SendRecv;
  send.bytes = 64;
  PlanOp recv = send;
  recv.kind = OpKind::Recv;
  Program p0 = prog, p1 = prog;
  send.peer_offset = 1, recv.peer_offset = 1;
  p0.add(send);
  p0.add(recv, {0});
  send.peer_offset = -1, recv.peer_offset = -1;
  p1.add(send);
  p1.add(recv, {0});
  plan.programs = {p0, p1};
  plan.program_of_rank = {0, 1};
  plan.program_names = {"a", "b"};
  EXPECT_TRUE(stuck_ops(plan).empty());  // separate lanes: both sends meet their receives
}

// ---- with a GPU ------------------------------------------------------------------------------------------

#define SKIP_WITHOUT_NCCL_GPU()                                                 \
  do {                                                                          \
    if (const std::optional<std::string> why = real::nccl_unavailable_reason()) \
      GTEST_SKIP() << *why;                                                     \
  } while (0)

TEST(CudaBackend, IsRegisteredAsRealCuda) {
  BackendRegistry registry("backend");
  real::add_real_backends(registry);
  ASSERT_NE(registry.find("real-cuda"), nullptr);
  EXPECT_NE(registry.find("real-cpu"), nullptr);
}

TEST(CudaBackend, WithoutAGpuSaysWhyInOneLine) {
  const std::optional<std::string> why = real::nccl_unavailable_reason();
  if (!why) GTEST_SKIP() << "a GPU and NCCL are here";
  try {
    real::CudaBackend backend;
    FAIL() << "made a CUDA backend without a GPU";
  } catch (const Unavailable& e) {
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    EXPECT_FALSE(std::string(e.what()).empty());
  }
}

TEST(CudaBackend, BadOptionsAreRefusedBeforeLookingForAGpu) {
  real::CudaBackendOptions o;
  o.collective_algorithm = "no-such";
  EXPECT_THROW(real::CudaBackend{o}, UnknownName);
  o = {};
  o.warmup_iters = -1;
  EXPECT_THROW(real::CudaBackend{o}, InvalidArgument);
}

using Ran = std::tuple<int, int, int, std::uint32_t, std::int32_t, Bytes>;  // op, stream, kind, name, mb, bytes
std::multiset<Ran> ran_on(const Trace& t, int rank) {
  std::multiset<Ran> out;
  for (const Span& s : t.spans)
    if (s.rank == rank) out.insert({s.op, static_cast<int>(s.stream), static_cast<int>(s.kind), s.name, s.micro_batch, s.bytes});
  return out;
}

// One GPU: the tiny GPT on one rank, with zrdf and every technique pass that applies to one rank, native
// and ring collectives: the simulator's span set, FIFO streams that never overlap, the same live bytes
// at the end.
TEST(CudaBackend, OnOneGpuRunsThePlansWithTheSimulatorsSpans) {
  SKIP_WITHOUT_NCCL_GPU();
  const Topology topology = topo::single_switch(1, {100 * GBps, Time::us(1)}, device_preset("h100"));
  for (const char* algorithm : {"native", "ring"}) {
    real::CudaBackendOptions options;
    options.collective_algorithm = algorithm;
    real::CudaBackend gpu(options);
    for (const Case& c : cases(1)) {
      const std::string what = c.what + " (" + algorithm + ")";
      const Trace measured = gpu.run(c.plan);
      const Trace simulated = sim::simulate_plan(c.plan, topology, sim::PlanSimOptions{});
      EXPECT_EQ(measured.backend, "real-cuda");
      EXPECT_GT(measured.step_time.seconds(), 0) << what;
      EXPECT_EQ(ran_on(simulated, 0), ran_on(measured, 0)) << what;
      std::map<int, Time> last_end;  // per stream
      std::vector<Span> spans = measured.spans;
      std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.start < b.start; });
      for (const Span& s : spans) {
        if (s.stream == StreamKind::P2P) continue;
        EXPECT_LE(s.start, s.end) << what;
        EXPECT_GE(s.start, last_end[static_cast<int>(s.stream)]) << what << " " << measured.names.at(s.name);
        last_end[static_cast<int>(s.stream)] = s.end;
      }
      ASSERT_FALSE(measured.memory.empty()) << what;
      EXPECT_EQ(measured.memory.back().bytes, simulated.memory.back().bytes) << what;
      EXPECT_EQ(gpu.payload_check().wrong, 0) << what;
    }
  }
}

}  // namespace
}  // namespace twinbed
