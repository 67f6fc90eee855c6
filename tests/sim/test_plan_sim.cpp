#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <utility>

#include <nlohmann/json.hpp>

#include "support/layouts.hpp"
#include "twinbed/core/collective_algorithms.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/plan.hpp"
#include "twinbed/core/topology_builders.hpp"
#include "twinbed/sim/collective_sim.hpp"
#include "twinbed/sim/compute_model.hpp"
#include "twinbed/sim/group_collectives.hpp"
#include "twinbed/sim/plan_sim.hpp"

using namespace twinbed;
using twinbed::test_support::layout3d;
using namespace twinbed::sim;

namespace {

// Big enough per stage that the embedding and head (tiny vocabulary) are ~1% of a stage's work.
TransformerModel pipe_model() { return gpt_model("pipe", 32, 2048, 16, 1024, 64); }
TransformerModel small_model() { return gpt_model("small", 8, 512, 8, 256, 1024); }

Topology switch_of(int ranks, BytesPerSec bw = 100 * GBps) {
  return topo::single_switch(ranks, {bw, Time::us(1)}, device_preset("a100"));
}

// 2 nodes x 4 GPUs on a fat-tree: NVLink inside a node, one NIC per GPU to the leaf, one spine. One
// spine keeps the cluster symmetric for traffic between the nodes (the tied embedding's all-reduce
// between the stages): with two, ECMP hashing would put more pairs of ranks on one spine than on the
// other, and Representative would rightly fall back to Full.
Topology fat_tree_8(BytesPerSec nic = 25 * GBps, const std::string& device = "a100") {
  topo::FatTreeSpec spec;
  spec.nodes = 2;
  spec.gpus_per_node = 4;
  spec.nodes_per_leaf = 1;
  spec.spines = 1;
  spec.nvlink = {300 * GBps, Time::us(1)};
  spec.nic = {nic, Time::us(2)};
  spec.device = device_preset(device);
  return topo::fat_tree(spec);
}

struct Idle {
  double fraction = 0;  // idle / window on the compute stream, mean over stages
  Time idle;            // mean idle time per stage
  Time window;
};

// The pipeline's idle time, measured from the trace: the window is from 0 to the last compute span
// (optimizer steps excluded: they follow the flush and are not part of the pipeline schedule); a
// stage's idle time is the window minus its compute spans.
Idle pipeline_idle(const Trace& t, const Plan& plan) {
  const auto opt = std::find(t.names.begin(), t.names.end(), "optimizer_step") - t.names.begin();
  Time window;
  std::map<int, Time> busy;
  for (const Span& s : t.spans) {
    if (s.stream != StreamKind::Compute || s.kind == SpanKind::Collective) continue;
    if (static_cast<std::ptrdiff_t>(s.name) == opt) continue;
    window = std::max(window, s.end);
    busy[s.rank] += s.end - s.start;
  }
  Idle out;
  out.window = window;
  const int stride = plan.layout.tp * plan.layout.dp;
  double idle_sum = 0;
  for (int stage = 0; stage < plan.layout.pp; ++stage) idle_sum += (window - busy[stage * stride]).seconds();
  out.idle = Time::from_seconds(idle_sum / plan.layout.pp);
  out.fraction = out.idle.seconds() / window.seconds();
  return out;
}

PlanSimOptions free_comm() {
  PlanSimOptions o;
  o.free_communication = true;
  return o;
}

}  // namespace

// With communication free, a 1F1B pipeline idles (p-1)/(m+p-1) of the time (Narayanan et al.). The
// schedule is not a formula here: it emerges from the per-micro-batch ops and their send/recv
// dependencies. Tolerance 0.01: the first and last stages also run the embedding and head (launch
// overheads and a 64-word vocabulary: ~1% of a stage's work), which the formula ignores.
TEST(PlanSim, OneFOneBBubbleMatchesFormula) {
  for (int m : {4, 8, 16}) {
    const Layout l = layout3d(1, 1, 4, m);
    const Plan plan = build_plan(pipe_model(), l, {4, 8});
    const Trace t = simulate_plan(plan, switch_of(4), free_comm());
    const double want = 3.0 / (m + 3.0);
    EXPECT_NEAR(pipeline_idle(t, plan).fraction, want, 0.01) << "m = " << m;
    std::printf("1F1B p=4 m=%d: idle fraction %.4f, formula %.4f\n", m, pipeline_idle(t, plan).fraction, want);
  }
}

TEST(PlanSim, MoreMicroBatchesShrinkTheBubble) {
  double last = 1;
  for (int m : {2, 4, 8, 16}) {
    const Layout l = layout3d(1, 1, 4, m);
    const Plan plan = build_plan(pipe_model(), l, {4, 8});
    const double f = pipeline_idle(simulate_plan(plan, switch_of(4), free_comm()), plan).fraction;
    EXPECT_LT(f, last) << "m = " << m;
    last = f;
  }
}

TEST(PlanSim, GPipeHasTheSameBubbleAsOneFOneB) {
  Layout l = layout3d(1, 1, 4, 8);
  l.schedule = PipelineSchedule::GPipe;
  const Plan plan = build_plan(pipe_model(), l, {4, 8});
  EXPECT_NEAR(pipeline_idle(simulate_plan(plan, switch_of(4), free_comm()), plan).fraction, 3.0 / 11.0, 0.01);
}

// Interleaving with v chunks divides the bubble time by v (Narayanan et al.: (1/v)·(p-1)/m). The
// ratio is checked within 5%: with v chunks a stage's embedding/head share sits in 1/v of the layers,
// and the ~1% imbalance above weighs v times more against the v-times smaller bubble.
TEST(PlanSim, InterleavingDividesTheBubbleByV) {
  const int p = 4, m = 8;
  const Layout base = layout3d(1, 1, p, m);
  const Plan plan1 = build_plan(pipe_model(), base, {p, 8});
  const Idle one = pipeline_idle(simulate_plan(plan1, switch_of(p), free_comm()), plan1);
  for (int v : {2, 4}) {
    Layout l = base;
    l.schedule = PipelineSchedule::Interleaved1F1B;
    l.virtual_stages = v;
    const Plan plan = build_plan(pipe_model(), l, {p, 8});
    const Idle inter = pipeline_idle(simulate_plan(plan, switch_of(p), free_comm()), plan);
    const double ratio = inter.idle.seconds() / one.idle.seconds();
    EXPECT_NEAR(ratio, 1.0 / v, 0.05 / v) << "v = " << v;
    std::printf("interleaved v=%d: idle %.4f of 1F1B's (ideal %.4f); idle fraction %.4f vs 1F1B %.4f\n", v, ratio,
                1.0 / v, inter.fraction, one.fraction);
    EXPECT_LT(inter.window, one.window);
  }
}

// The backward of QKV and FC1 as Megatron issues it (plan_builder.cpp, ColumnBackward): the input
// gradient's tensor-parallel collective runs while the weight-gradient GEMM computes, and with sequence
// parallelism the re-gather of the input runs while the input-gradient GEMM computes: simulated spans
// of one rank overlap in time.
TEST(PlanSim, TensorParallelBackwardCollectivesOverlapTheGemms) {
  for (bool sp : {false, true}) {
    Layout l = layout3d(2, 4, 1, 2);
    l.sequence_parallel = sp;
    const Plan plan = build_plan(small_model(), l, {8, 4});
    const Trace t = simulate_plan(plan, fat_tree_8(), {});
    // Rank 0's spans of layer 3, micro-batch 0, by name.
    std::map<std::string, Span> by;
    for (const Span& s : t.spans) {
      const std::string& n = t.names[s.name];
      if (s.rank == 0 && s.micro_batch == 0 && n.rfind("l3.", 0) == 0) by[n.substr(3)] = s;
    }
    auto overlap = [&](const std::string& a, const std::string& b) {
      EXPECT_TRUE(by.count(a) && by.count(b)) << a << " / " << b;
      const Span& x = by[a];
      const Span& y = by[b];
      return x.start < y.end && y.start < x.end;
    };
    const std::string reduce = sp ? "tp_reducescatter_bwd" : "tp_allreduce_bwd";
    ASSERT_TRUE(by.count(reduce)) << "sp " << sp;
    EXPECT_EQ(by[reduce].stream, StreamKind::P2P);
    // The layer's last input-gradient collective (QKV's) beside QKV's weight gradient.
    Span last_reduce;
    for (const Span& s : t.spans) {
      if (s.rank == 0 && s.micro_batch == 0 && t.names[s.name] == "l3." + reduce) last_reduce = s;
    }
    const Span& wgrad = by["qkv_wgrad"];
    EXPECT_TRUE(last_reduce.start < wgrad.end && wgrad.start < last_reduce.end) << "sp " << sp;
    if (sp) {
      EXPECT_TRUE(by.count("tp_allgather_wgrad"));
      // QKV's re-gather beside QKV's input-gradient GEMM (the map keeps the later of the layer's two).
      EXPECT_TRUE(overlap("tp_allgather_wgrad", "qkv_dgrad"));
    }
  }
}

TEST(PlanSim, FasterLinksShortenTheStep) {
  const Layout l = layout3d(2, 4, 1, 2);  // data parallelism across the two nodes
  const Plan plan = build_plan(small_model(), l, {8, 4});
  const Time slow = simulate_plan(plan, fat_tree_8(5 * GBps), {}).step_time;
  const Time fast = simulate_plan(plan, fat_tree_8(50 * GBps), {}).step_time;
  EXPECT_LT(fast, slow);
  const Time free = simulate_plan(plan, fat_tree_8(50 * GBps), free_comm()).step_time;
  EXPECT_LT(free, fast);
}

// Transformer Engine's userbuffers (Layout::tp_comm_overlap): the sequence-parallel collectives the
// forward waits for, and the output gradients' gathers, run beside the chunks of their GEMMs instead of
// between ops, so the step shortens; it stays above what the same chunks take with communication free.
// The split GEMMs' chunks take their share of the whole (OpCost::split): with communication free the
// overlapped plan is the plain one's within the chunks' extra launches (4 µs each).
TEST(PlanSim, TensorParallelCommOverlapHidesTheSequenceParallelCollectives) {
  Layout l = layout3d(1, 4, 1, 2);
  l.sequence_parallel = true;
  const TransformerModel m = gpt_model("tp", 2, 4096, 32, 2048, 1024);
  const Topology topo = switch_of(4);
  const Plan plain = build_plan(m, l, {4, 4});
  l.tp_comm_overlap = true;
  const Plan ub = build_plan(m, l, {4, 4});
  const Time plain_t = simulate_plan(plain, topo, {}).step_time;
  const Time ub_t = simulate_plan(ub, topo, {}).step_time;
  const Time plain_free = simulate_plan(plain, topo, free_comm()).step_time;
  const Time ub_free = simulate_plan(ub, topo, free_comm()).step_time;
  EXPECT_LT(ub_t, plain_t);
  EXPECT_GT(ub_t, ub_free);
  // Extra launches: per layer and micro-batch, QKV and FC1 forward and the projection's and FC2's input
  // gradients in 4 chunks, the projection's and FC2's forward in 4: six GEMMs of three launches more.
  const Time extra = device_preset("a100").launch_overhead * (6 * 3 * 2 * 2);
  EXPECT_NEAR(ub_free.seconds(), (plain_free + extra).seconds(), 1e-3 * plain_free.seconds());
}

// Representative simulates one rank per stage; on a symmetric cluster it must equal Full exactly.
TEST(PlanSim, RepresentativeEqualsFull) {
  for (PipelineSchedule s : {PipelineSchedule::OneFOneB, PipelineSchedule::Interleaved1F1B}) {
    for (int zero : {0, 1, 3}) {
      Layout l = layout3d(2, 2, 2, 4);
      l.schedule = s;
      l.virtual_stages = s == PipelineSchedule::Interleaved1F1B ? 2 : 1;
      l.zero_stage = zero;
      l.bucket_bytes = 2 * MiB;
      const Plan plan = build_plan(small_model(), l, {8, 4});
      const Topology topo = fat_tree_8();
      PlanSimOptions full;
      full.fidelity = Fidelity::Full;
      PlanSimStats fs, rs;
      const Trace f = simulate_plan(plan, topo, full, fs);
      const Trace r = simulate_plan(plan, topo, {}, rs);
      ASSERT_EQ(rs.fidelity_used, Fidelity::Representative) << rs.fallback_reason;
      EXPECT_EQ(rs.simulated_ranks, 2);
      EXPECT_EQ(fs.simulated_ranks, 8);
      EXPECT_EQ(r.step_time, f.step_time);
      EXPECT_EQ(r.recorded_rank, (std::vector<int>{0, 0, 0, 0, 4, 4, 4, 4}));
      std::vector<Span> fspans;
      std::vector<MemorySample> fmem;
      for (const Span& sp : f.spans) {
        if (sp.rank == 0 || sp.rank == 4) fspans.push_back(sp);
      }
      for (const MemorySample& m : f.memory) {
        if (m.rank == 0 || m.rank == 4) fmem.push_back(m);
      }
      EXPECT_EQ(r.spans, fspans) << schedule_name(s) << " zero " << zero;
      EXPECT_EQ(r.memory, fmem);
      // And every rank of a stage did exactly what its representative did.
      for (int rank = 1; rank < 8; ++rank) {
        std::vector<Span> a, b;
        for (const Span& sp : f.spans) {
          if (sp.rank == rank) a.push_back(sp);
          if (sp.rank == r.recorded_rank[rank]) b.push_back(sp);
        }
        for (Span& sp : b) sp.rank = rank;
        EXPECT_EQ(a, b) << "rank " << rank;
      }
    }
  }
}

// overlap_param_gather: ZeRO-1's gather of the updated parameters moves from after the optimizer step
// to the start of the step, where it runs beside the forward; the first layer's forward waits for the
// bucket holding it, and the step is shorter. Representative still equals Full.
TEST(PlanSim, ParameterGathersAheadRunBesideTheForward) {
  Layout l = layout3d(8, 1, 1, 2);  // data parallelism across the two nodes
  l.zero_stage = 1;
  l.bucket_bytes = 2 * MiB;
  const Topology topo = fat_tree_8(5 * GBps);
  const Trace after = simulate_plan(build_plan(small_model(), l, {8, 4}), topo, {});
  l.overlap_param_gather = true;
  const Plan plan = build_plan(small_model(), l, {8, 4});
  const Trace ahead = simulate_plan(plan, topo, {});
  EXPECT_LT(ahead.step_time, after.step_time);
  PlanSimOptions full;
  full.fidelity = Fidelity::Full;
  EXPECT_EQ(simulate_plan(plan, topo, full).step_time, ahead.step_time);

  const Program& p = plan.program(0);
  Time first_gather_end = Time::max(), last_gather_end, first_layer_start = Time::max(), compute_before_last_gather;
  for (const Span& sp : ahead.spans) {
    if (sp.rank != 0 || sp.op < 0) continue;
    const PlanOp& op = p.ops[static_cast<std::size_t>(sp.op)];
    if (op.kind == OpKind::Collective && op.collective == CollectiveOp::AllGather && op.params >= 0) {
      first_gather_end = std::min(first_gather_end, sp.end);
      last_gather_end = std::max(last_gather_end, sp.end);
    }
  }
  for (const Span& sp : ahead.spans) {
    if (sp.rank != 0 || sp.op < 0 || p.ops[static_cast<std::size_t>(sp.op)].kind != OpKind::Compute) continue;
    if (p.ops[static_cast<std::size_t>(sp.op)].layer == 0) first_layer_start = std::min(first_layer_start, sp.start);
    if (sp.start < last_gather_end) compute_before_last_gather += sp.end - sp.start;
  }
  EXPECT_GE(first_layer_start, first_gather_end);  // the first layer waits for its bucket
  EXPECT_GT(compute_before_last_gather, Time{});  // and the forward runs while later ones gather
}

// Coarse merges runs of compute ops nothing else waits on: the step time cannot change (the merged
// ops ran back to back anyway); what changes is the number of spans (per-kernel detail is lost).
TEST(PlanSim, CoarseKeepsTheStepTimeAndDropsSpans) {
  Layout l = layout3d(2, 2, 2, 4);
  l.recompute = Recompute::Selective;
  const Plan plan = build_plan(small_model(), l, {8, 4});
  const Topology topo = fat_tree_8();
  PlanSimOptions coarse;
  coarse.fidelity = Fidelity::Coarse;
  PlanSimStats rs, cs;
  const Trace r = simulate_plan(plan, topo, {}, rs);
  const Trace c = simulate_plan(plan, topo, coarse, cs);
  EXPECT_EQ(c.step_time, r.step_time);
  EXPECT_EQ(c.memory, r.memory);
  // ... also where NCCL's CTAs slow the GEMMs (plan_sim.cpp, contended): a merged run's ops each
  // meet the CTAs in flight as single ops do.
  EXPECT_GT(rs.contended_ops, 0);
  EXPECT_LT(c.spans.size(), r.spans.size());
  EXPECT_LT(cs.ops_executed, rs.ops_executed);
  double fr = 0, fc = 0;
  for (const Span& s : r.spans) fr += s.flops;
  for (const Span& s : c.spans) fc += s.flops;
  EXPECT_DOUBLE_EQ(fc, fr);
  RecordProperty("representative_spans", static_cast<int>(r.spans.size()));
  RecordProperty("coarse_spans", static_cast<int>(c.spans.size()));
  // On H100s too, whose GEMMs are persistent kernels, and with NCCL's CTAs coming and going while
  // matmuls run: a merged run's parts keep the clocks single ops keep (OpClock).
  // (A wider model, so that its GEMMs have a CTA for every SM, and small buckets, so that the gradients'
  // reductions run beside the backward's GEMMs.)
  l.bucket_bytes = 256 * KiB;
  const Plan wide = build_plan(gpt_model("wide", 4, 2048, 16, 2048, 1024), l, {8, 4});
  const Topology hopper = fat_tree_8(25 * GBps, "h100");
  PlanSimStats hr, hc;
  const Trace rh = simulate_plan(wide, hopper, {}, hr);
  const Trace ch = simulate_plan(wide, hopper, coarse, hc);
  EXPECT_EQ(ch.step_time, rh.step_time);
  EXPECT_GT(hr.single_retimings, 0);
  EXPECT_GT(hc.run_retimings, 0);
}

TEST(PlanSim, RepresentativeFallsBackOnAnAsymmetricCluster) {
  // Ranks 0-3 on fast links, 4-7 on slow ones: the DP groups of stage 0 and stage 1 differ, but each
  // stage's groups are alike; make the tensor groups differ instead by splitting a stage over hosts.
  topo::FatTreeSpec spec;
  spec.nodes = 4;
  spec.gpus_per_node = 2;
  spec.nodes_per_leaf = 1;
  spec.spines = 1;
  spec.nvlink = {300 * GBps, Time::us(1)};
  spec.nic = {25 * GBps, Time::us(2)};
  spec.device = device_preset("a100");
  const Topology topo = topo::fat_tree(spec);
  Layout l = layout3d(1, 4, 2, 2);  // a tensor group of 4 spans two 2-GPU hosts
  const Plan plan = build_plan(small_model(), l, {8, 2});
  PlanSimStats st;
  const Trace r = simulate_plan(plan, topo, {}, st);
  PlanSimOptions full;
  full.fidelity = Fidelity::Full;
  // Whether or not it falls back, the result must equal Full's.
  EXPECT_EQ(r.step_time, simulate_plan(plan, topo, full).step_time);
}

// Memory per rank: the model state of rank_model_state_bytes is live throughout (what remains at the
// end of the iteration), and at the peak of stage 0 of a 1F1B pipeline p micro-batches' activations
// are stored (warm-up p-1 plus the one in flight) plus, with recomputation, one layer's regenerated
// activations during its backward.
TEST(PlanSim, MemoryFollowsZeroAndActivationFormulas) {
  const int p = 2, m = 4;
  for (int zero = 0; zero <= 3; ++zero) {
    for (Recompute rc : {Recompute::None, Recompute::Selective, Recompute::Full}) {
      Layout l = layout3d(2, 2, p, m);
      l.zero_stage = zero;
      l.recompute = rc;
      const Plan plan = build_plan(small_model(), l, {8, 4});
      const Trace t = simulate_plan(plan, fat_tree_8(), free_comm());
      const ModelStateBytes state = rank_model_state_bytes(small_model(), l, 0);
      Bytes peak = 0, last = 0;
      for (const MemorySample& s : t.memory) {
        if (s.rank != 0) continue;
        peak = std::max(peak, s.bytes);
        last = s.bytes;
      }
      EXPECT_EQ(last, state.total()) << "zero " << zero;
      const Bytes act = rank_activation_bytes_per_layer(small_model(), l);
      Layout none = l;
      none.recompute = Recompute::None;
      const Bytes regen = rank_activation_bytes_per_layer(small_model(), none) - act;
      const std::int64_t layers = l.stage_layers(small_model(), 0);
      if (zero < 3) {
        EXPECT_EQ(peak, state.total() + p * layers * act + regen) << "zero " << zero << " " << recompute_name(rc);
      } else {
        EXPECT_GT(peak, state.total() + p * layers * act + regen);  // plus gathered parameters
      }
    }
  }
}

// recompute_layers: the stage's first layer recomputed, the others kept whole. The peak holds p
// micro-batches of one checkpoint and layers - 1 whole layers (when the first backward begins, at the
// stage's last layer: the recomputed first layer's workspace comes once the others' activations are
// freed); the step does one layer's recomputation per micro-batch, so it lies between none and full.
TEST(PlanSim, RecomputeLayersBetweenNoneAndFull) {
  const int p = 2, m = 4;
  Layout l = layout3d(2, 2, p, m);
  const auto run = [&](Recompute rc, int first) {
    l.recompute = rc;
    l.recompute_layers = first;
    return simulate_plan(build_plan(small_model(), l, {8, 4}), fat_tree_8(), free_comm());
  };
  const Trace none = run(Recompute::None, 0), full = run(Recompute::Full, 0), part = run(Recompute::Full, 1);
  EXPECT_LT(none.step_time, part.step_time);
  EXPECT_LT(part.step_time, full.step_time);
  Bytes peak = 0;
  for (const MemorySample& s : part.memory) {
    if (s.rank == 0) peak = std::max(peak, s.bytes);
  }
  const Bytes act = rank_activation_bytes_per_layer(small_model(), l);  // l: full, recompute_layers 1
  Layout kept = l;
  kept.recompute = Recompute::None;
  const Bytes whole = rank_activation_bytes_per_layer(small_model(), kept);
  const std::int64_t layers = l.stage_layers(small_model(), 0);
  ASSERT_GE(layers, 2);
  EXPECT_LT(act, whole);
  EXPECT_EQ(peak, rank_model_state_bytes(small_model(), l, 0).total() + p * (act + (layers - 1) * whole));
}

// Sends are eager (plan.hpp): what depends on a Send goes on when it is posted, not when its message
// arrives. Rank 0 sends 1 GiB to rank 1 and, depending on the Send only, allocates and frees a tensor.
namespace {

// Two ranks, each its own program: rank 0 sends 1 GiB (tag 7) to rank 1, which receives it. Names:
// "send", "recv", "after_send", "send_done".
Plan one_message() {
  Plan plan;
  plan.cluster = {2, 2};
  plan.program_of_rank = {0, 1};
  plan.groups.resize(kGroupKinds);
  for (GroupSet& g : plan.groups) g.group_of_rank.assign(2, -1);
  plan.names = {"send", "recv", "after_send", "send_done"};
  PlanOp send;
  send.kind = OpKind::Send;
  send.stream = StreamKind::P2P;
  send.span = SpanKind::SendRecv;
  send.peer_offset = 1;
  send.tag = 7;
  send.bytes = GiB;
  plan.programs.resize(2);
  plan.programs[0].add(send);
  PlanOp recv = send;
  recv.kind = OpKind::Recv;
  recv.peer_offset = -1;
  recv.name = 1;
  plan.programs[1].add(recv);
  return plan;
}

Trace simulate_full(const Plan& plan) {
  PlanSimOptions full;
  full.fidelity = Fidelity::Full;
  return simulate_plan(plan, switch_of(2), full);
}

}  // namespace

TEST(PlanSim, WhatDependsOnASendGoesOnWhenItIsPosted) {
  Plan plan = one_message();
  PlanOp alloc = alloc_op(TensorClass::Activation, 0, MiB, 2, StreamKind::Compute);
  plan.programs[0].add(alloc, {0});
  PlanOp free = alloc;
  free.kind = OpKind::Free;
  plan.programs[0].add(free, {1});
  validate(plan);

  const Trace t = simulate_full(plan);
  ASSERT_EQ(t.spans.size(), 1u);  // the Send; a Recv records none
  const Span& message = t.spans[0];
  EXPECT_EQ(message.rank, 0);
  EXPECT_GT(message.end, Time::ms(1));  // 1 GiB at 100 GB/s: ~10 ms
  EXPECT_EQ(t.step_time, message.end);
  ASSERT_FALSE(t.memory.empty());
  for (const MemorySample& m : t.memory) {
    EXPECT_EQ(m.rank, 0);
    EXPECT_EQ(m.time, Time()) << "the allocation waited for the message";
  }
}

// A SendDone (blocking sends: Layout::overlap_p2p_comm off) holds its stream until the message is
// through: the allocation after it waits the ~10 ms the Send's message takes, and it records no span.
TEST(PlanSim, WhatFollowsASendDoneWaitsForTheMessage) {
  Plan plan = one_message();
  PlanOp done = plan.programs[0].ops[0];
  done.kind = OpKind::SendDone;
  done.stream = StreamKind::Compute;
  done.bytes = 0;
  done.name = 3;
  plan.programs[0].add(done, {0});
  plan.programs[0].add(alloc_op(TensorClass::Activation, 0, MiB, 2, StreamKind::Compute));  // after it in the queue
  validate(plan);

  const Trace t = simulate_full(plan);
  ASSERT_EQ(t.spans.size(), 1u);  // the Send's; a SendDone records none
  const Span& message = t.spans[0];
  EXPECT_GT(message.end, Time::ms(1));
  ASSERT_FALSE(t.memory.empty());
  EXPECT_EQ(t.memory.front().time, message.end) << "the allocation waited for the message";

  // A SendDone with no Send of its message before it is an invalid plan.
  Plan orphan = plan;
  orphan.programs[0].ops[1].tag = 8;
  EXPECT_THROW(validate(orphan), InvalidArgument);
}

namespace {

// A hand-made plan on `ranks` ranks, every group kind empty until a test fills one. Each rank runs its
// own program (Full fidelity is what these tests use).
Plan bare_plan(int ranks) {
  Plan plan;
  plan.cluster = {ranks, ranks};
  plan.groups.resize(kGroupKinds);
  for (GroupSet& g : plan.groups) g.group_of_rank.assign(static_cast<std::size_t>(ranks), -1);
  plan.programs.resize(static_cast<std::size_t>(ranks));
  for (int r = 0; r < ranks; ++r) plan.program_of_rank.push_back(r);
  plan.names = {"first", "second", "message"};
  return plan;
}

void add_group(Plan& plan, GroupKind kind, const std::vector<int>& members) {
  GroupSet& set = plan.groups[static_cast<std::size_t>(kind)];
  for (int r : members) set.group_of_rank[static_cast<std::size_t>(r)] = static_cast<int>(set.members.size());
  set.members.push_back(members);
}

// A message of `bytes` from a rank to the next: its Send (P2P stream) and the next rank's Recv, both
// tagged `tag` and named `name`.
std::pair<PlanOp, PlanOp> message(Bytes bytes, std::int64_t tag, std::uint32_t name) {
  PlanOp send;
  send.kind = OpKind::Send;
  send.stream = StreamKind::P2P;
  send.span = SpanKind::SendRecv;
  send.peer_offset = 1;
  send.tag = tag;
  send.bytes = bytes;
  send.name = name;
  PlanOp recv = send;
  recv.kind = OpKind::Recv;
  recv.peer_offset = -1;
  return {send, recv};
}

PlanOp all_reduce(GroupKind kind, StreamKind stream, Bytes bytes, std::uint32_t name) {
  PlanOp op = collective_op(CollectiveOp::AllReduce, kind, bytes, stream);
  op.name = name;
  return op;
}

// The span named `name` on `rank`, and its duration.
Span span_named(const Trace& t, int rank, const std::string& name) {
  for (const Span& s : t.spans) {
    if (s.rank == rank && t.names[s.name] == name) return s;
  }
  ADD_FAILURE() << "no span " << name << " on rank " << rank;
  return Span{};
}
Time span_time(const Trace& t, int rank, const std::string& name) {
  const Span s = span_named(t, rank, name);
  return s.end - s.start;
}

// A ring all-reduce of `bytes` on two ranks of switch_of alone: two rounds of half the buffer over a
// two-link path (1 us each), and the reduction of half the buffer after the first.
Time ring2(Bytes bytes, BytesPerSec bw) {
  return (Time::us(2) + transfer_time(bytes / 2, bw)) * 2 + reduction_time(bytes / 2, device_preset("a100"));
}

PlanSimOptions full_ring() {
  PlanSimOptions o;
  o.fidelity = Fidelity::Full;
  o.collective_algorithm = "ring";
  return o;
}

}  // namespace

// The whole step contends (issue 12, item 3): two collectives of different kinds, on different
// streams, over the same two ranks cross the same links at the same time and slow each other down.
// A ring all-reduce of B bytes on two ranks moves B bytes each way over each rank's link; alone it
// takes 2·(latency + B/2 / bw) plus the reduction of B/2 bytes; together both carry 2B over one link
// at bw: 2B / bw each (a whole collective stretches, its latency and reduction too: link_sharing.hpp).
TEST(PlanSim, TwoCollectivesOnOneLinkSlowEachOther) {
  const Bytes bytes = 256 * MiB;
  const BytesPerSec bw = 100 * GBps;
  Plan plan = bare_plan(2);
  add_group(plan, GroupKind::Dp, {0, 1});
  add_group(plan, GroupKind::Tp, {0, 1});
  for (Program& p : plan.programs) {
    p.add(all_reduce(GroupKind::Dp, StreamKind::Collective, bytes, 0));
    p.add(all_reduce(GroupKind::Tp, StreamKind::Compute, bytes, 1));
  }
  validate(plan);
  Plan alone = bare_plan(2);
  alone.groups = plan.groups;
  for (Program& p : alone.programs) p.add(all_reduce(GroupKind::Dp, StreamKind::Collective, bytes, 0));

  const Topology topo = switch_of(2, bw);
  const Time solo = span_time(simulate_plan(alone, topo, full_ring()), 0, "first");
  EXPECT_EQ(solo, ring2(bytes, bw));  // the closed form still holds alone
  const Trace both = simulate_plan(plan, topo, full_ring());
  const double want = 2.0 * static_cast<double>(bytes) / bw;
  for (const char* name : {"first", "second"}) {
    EXPECT_GT(span_time(both, 0, name), solo) << name;
    EXPECT_NEAR(span_time(both, 0, name).seconds(), want, 1e-9) << name;
  }
  // The analytical network model is contention-free: each takes its alone time.
  PlanSimOptions analytical = full_ring();
  analytical.network = "analytical";
  EXPECT_EQ(span_time(simulate_plan(plan, topo, analytical), 0, "first"), solo);
}

// ... and on disjoint links they do not: a DP all-reduce on ranks 0-1 and a TP all-reduce on ranks
// 2-3 of one switch each take their alone time.
TEST(PlanSim, CollectivesOnDisjointLinksDoNotSlow) {
  const Bytes bytes = 256 * MiB;
  Plan plan = bare_plan(4);
  add_group(plan, GroupKind::Dp, {0, 1});
  add_group(plan, GroupKind::Tp, {2, 3});
  for (int r : {0, 1}) plan.programs[static_cast<std::size_t>(r)].add(all_reduce(GroupKind::Dp, StreamKind::Collective, bytes, 0));
  for (int r : {2, 3}) plan.programs[static_cast<std::size_t>(r)].add(all_reduce(GroupKind::Tp, StreamKind::Compute, bytes, 1));
  validate(plan);
  const Topology topo = switch_of(4);
  const Time solo = ring2(bytes, 100 * GBps);
  const Trace t = simulate_plan(plan, topo, full_ring());
  EXPECT_EQ(span_time(t, 0, "first"), solo);
  EXPECT_EQ(span_time(t, 2, "second"), solo);
}

namespace {

// Two ranks: a DP all-reduce of `bytes` on the Collective stream and one compute op (`cost`) on the
// Compute stream, posted together at time 0; `after`: the compute op waits for the all-reduce.
// Two ranks in one DP group, `cost` their only cost, and the Compute-stream op that runs it (name 1).
std::pair<Plan, PlanOp> dp_pair_computing(const OpCost& cost) {
  Plan plan = bare_plan(2);
  add_group(plan, GroupKind::Dp, {0, 1});
  plan.costs.push_back(cost);
  PlanOp compute;
  compute.kind = OpKind::Compute;
  compute.stream = StreamKind::Compute;
  compute.span = span_of(cost);
  compute.cost = 0;
  compute.name = 1;
  return {plan, compute};
}

Plan reduce_beside(const OpCost& cost, Bytes bytes, bool after, bool copy_engine = false) {
  auto [plan, compute] = dp_pair_computing(cost);
  for (Program& p : plan.programs) {
    PlanOp reduce_op = all_reduce(GroupKind::Dp, StreamKind::Collective, bytes, 0);
    reduce_op.copy_engine = copy_engine;
    const std::uint32_t reduce = p.add(reduce_op);
    if (after) {
      p.add(compute, {reduce});
    } else {
      p.add(compute);
    }
  }
  validate(plan);
  return plan;
}

}  // namespace

namespace {

// What a GEMM of `tiles` output tiles, k deep, takes on `free` of the A100's 108 SMs, from its time
// `alone` on all of them: the launch overhead, then its waves, each as long as before (every SM computes
// at the same rate), and the kernel's fixed cost once (compute_model.cpp: W waves take as long as
// W·(k + 135) + 530 k-steps).
Time on_free_sms(Time alone, double tiles, int free, double k) {
  const Time launch = device_preset("a100").launch_overhead;
  const auto k_steps = [&](int sms) { return std::ceil(tiles / sms) * (k + 135) + 530; };
  return launch + Time::from_seconds((alone - launch).seconds() * k_steps(free) / k_steps(108));
}

}  // namespace

// The whole step contends on the GPU too (issue 12, item 3): NCCL runs each channel of a collective
// as one CTA that holds an SM alone for the collective's duration (NVIDIA/nccl#689), and a GEMM
// meanwhile runs on the SMs left (plan_sim.cpp, contended). On two A100s of switch_of NCCL runs the
// 256 MiB and 2 GiB all-reduces as ring/Simple on 8 channels, so 8 CTAs (nccl_choose, asserted), so an
// 8192³ BF16 GEMM (2,048 tiles of 256 × 128) beside one runs its 19 waves of 108 as ceil(2048 / 100)
// = 21 of 100: × 21/19 beside the 2 GiB one, which outlasts it. The 256 MiB one ends while the GEMM
// runs: the GEMM's share done by then ran on 100 SMs, the rest runs on all 108. Started after the
// all-reduce has ended, its alone time. A copy-engine transfer holds no SMs: the GEMM is unchanged
// beside it, and so is everything on a CPU device (no SM count, no NCCL) and beside an explicitly
// scheduled collective (not NCCL's kernel). (A memory-bound op beside it: the test after this one.)
TEST(PlanSim, AGemmBesideAnNcclCollectiveRunsOnTheSmsItLeaves) {
  const Bytes bytes = 256 * MiB;
  const OpCost gemm = matmul_cost("gemm", OpCost::Kind::Gemm, OpCost::Phase::Forward, 8192, 8192, 8192, 1, DType::BF16);
  const Topology topo = switch_of(2);
  const DeviceSpec a100 = device_preset("a100");
  ASSERT_EQ(a100.sms, 108);
  CollectiveRequest req;
  req.op = CollectiveOp::AllReduce;
  req.ranks = 2;
  req.bytes = bytes;
  const auto fabric = nccl_fabric(topo, {0, 1});
  ASSERT_TRUE(fabric.has_value());
  const NcclChoice choice = nccl_choose(req, *fabric);
  ASSERT_EQ(choice.channels, 8) << choice.name();

  const Bytes long_bytes = 2 * GiB;
  req.bytes = long_bytes;
  ASSERT_EQ(nccl_choose(req, *fabric).channels, 8);

  PlanSimOptions full;
  full.fidelity = Fidelity::Full;
  const Time alone = op_time(gemm, roofline_profile(a100));
  const Time slow = on_free_sms(alone, 2048, 100, 8192);
  // Beside the whole of the 2 GiB all-reduce: on 100 SMs throughout.
  const Trace whole = simulate_plan(reduce_beside(gemm, long_bytes, false), topo, full);
  const Time beside_whole = span_time(whole, 0, "second");
  ASSERT_GT(span_named(whole, 0, "first").end, span_named(whole, 0, "second").end);
  EXPECT_NEAR(beside_whole.seconds(), slow.seconds(), 1e-12);
  EXPECT_NEAR((beside_whole - a100.launch_overhead).seconds() / (alone - a100.launch_overhead).seconds(),
              (21.0 * 8327 + 530) / (19.0 * 8327 + 530), 1e-9);
  // Beside the 256 MiB one, which ends c into the GEMM: c of it at the slow rate, the rest at the fast.
  const Trace t = simulate_plan(reduce_beside(gemm, bytes, false), topo, full);
  const Time beside = span_time(t, 0, "second");
  const double c = (span_named(t, 0, "first").end - span_named(t, 0, "second").start).seconds();
  ASSERT_GT(c, 0);
  ASSERT_LT(c, slow.seconds());
  EXPECT_NEAR(beside.seconds(), c + (1 - c / slow.seconds()) * alone.seconds(), 1e-9);
  EXPECT_LT(beside, slow);
  EXPECT_GT(beside, alone);
  EXPECT_EQ(span_time(t, 1, "second"), beside);  // both ranks alike
  // After it: unchanged.
  EXPECT_EQ(span_time(simulate_plan(reduce_beside(gemm, bytes, true), topo, full), 0, "second"), alone);
  // Representative (one rank per program; here every rank has its own) gives the same.
  EXPECT_EQ(span_time(simulate_plan(reduce_beside(gemm, bytes, false), topo, {}), 0, "second"), beside);

  // Nor is a copy-engine transfer (PlanOp::copy_engine: userbuffers' ring exchange): the GEMM unchanged.
  EXPECT_EQ(span_time(simulate_plan(reduce_beside(gemm, bytes, false, true), topo, full), 0, "second"), alone);

  // An explicit schedule is not NCCL's kernel: no CTAs counted, the GEMM unchanged.
  EXPECT_EQ(span_time(simulate_plan(reduce_beside(gemm, bytes, false), topo, full_ring()), 0, "second"), alone);

  // A CPU device: no SMs, no NCCL; unchanged.
  DeviceSpec cpu;
  cpu.name = "cpu";
  cpu.peak_bf16 = 1e12;
  cpu.memory_bandwidth = 1e11;
  const Topology cpus = topo::single_switch(2, {100 * GBps, Time::us(1)}, cpu);
  EXPECT_EQ(span_time(simulate_plan(reduce_beside(gemm, bytes, false), cpus, full), 0, "second"),
            op_time(gemm, roofline_profile(cpu)));
}

// NCCL's memory traffic (plan_sim.cpp, contended): while an all-reduce's data moves, each member's memory
// carries 3 bytes per byte over its link (2 for a copy-engine transfer), and a memory-bound op beside it
// gets the bandwidth that leaves, at least half; re-timed by its progress when the traffic stops during
// it. After the all-reduce, or beside an explicit schedule (not NCCL's kernel), it is unchanged.
TEST(PlanSim, AMemoryBoundOpBesideAnNcclCollectiveGetsTheBandwidthItsTrafficLeaves) {
  const ComputeProfile a100 = roofline_profile(device_preset("a100"));
  const auto copy_of = [](Bytes bytes) {
    OpCost copy;
    copy.name = "copy";
    copy.kind = OpCost::Kind::MemoryBound;
    copy.bytes = bytes;
    return copy;
  };
  const OpCost copy = copy_of(256 * MiB);
  const Time alone = op_time(copy, a100);
  const auto at_share = [&](double share) {
    return a100.launch_overhead + Time::from_seconds((alone - a100.launch_overhead).seconds() / share);
  };
  PlanSimOptions full;
  full.fidelity = Fidelity::Full;
  const Topology topo = switch_of(2);
  const Bytes bytes = 2 * GiB;  // outlasts the copy
  for (const bool copy_engine : {false, true}) {
    const Trace t = simulate_plan(reduce_beside(copy, bytes, false, copy_engine), topo, full);
    const Span& reduce = span_named(t, 0, "first");
    ASSERT_GT(reduce.end, span_named(t, 0, "second").end);
    // 2 ranks: each sends and receives the whole buffer (busbw factor 1).
    const double traffic = (copy_engine ? 2 : 3) * static_cast<double>(bytes) / (reduce.end - reduce.start).seconds();
    ASSERT_LT(traffic, a100.memory_bandwidth / 2);
    EXPECT_NEAR(span_time(t, 0, "second").seconds(), at_share(1 - traffic / a100.memory_bandwidth).seconds(), 1e-11)
        << "copy engine " << copy_engine;
    EXPECT_EQ(span_time(t, 1, "second"), span_time(t, 0, "second"));
  }
  // A short all-reduce, over c into a long copy: c of it at the slow rate, the rest at its own.
  const OpCost long_copy = copy_of(4 * GiB);
  const Time long_alone = op_time(long_copy, a100);
  const Trace t = simulate_plan(reduce_beside(long_copy, 64 * MiB, false), topo, full);
  const double c = (span_named(t, 0, "first").end - span_named(t, 0, "first").start).seconds();
  const double share = 1 - 3 * static_cast<double>(64 * MiB) / c / a100.memory_bandwidth;
  const double slow = (long_alone - a100.launch_overhead).seconds() / share + a100.launch_overhead.seconds();
  ASSERT_LT(c, slow);
  EXPECT_NEAR(span_time(t, 0, "second").seconds(), c + (1 - c / slow) * long_alone.seconds(), 1e-9);
  EXPECT_GT(span_time(t, 0, "second"), long_alone);
  // Links fast enough that the traffic would take more than half: half is left.
  EXPECT_NEAR(span_time(simulate_plan(reduce_beside(copy, bytes, false), switch_of(2, 2000 * GBps), full), 0, "second")
                  .seconds(),
              at_share(0.5).seconds(), 1e-11);
  // After it, or beside an explicit schedule: unchanged.
  EXPECT_EQ(span_time(simulate_plan(reduce_beside(copy, bytes, true), topo, full), 0, "second"), alone);
  EXPECT_EQ(span_time(simulate_plan(reduce_beside(copy, bytes, false), topo, full_ring()), 0, "second"), alone);
}

// Coarse stays exact under SM contention: two GEMMs A then B merge into one run; a short all-reduce
// (16 MiB) is in flight when A starts, and ends during A, when the Collective stream's next one (1
// GiB, posted then) starts, which is still in flight when B starts. Full: A is slowed by the first's
// CTAs, B by the second's; the merged run re-times itself at each change (run_retimings) and ends at
// the same time.
TEST(PlanSim, CoarseRunsMeetTheCtasInFlightAtEachOpsStart) {
  const OpCost gemm = matmul_cost("gemm", OpCost::Kind::Gemm, OpCost::Phase::Forward, 8192, 8192, 8192, 1, DType::BF16);
  auto [plan, compute] = dp_pair_computing(gemm);
  for (Program& p : plan.programs) {
    const std::uint32_t a = p.add(compute);
    p.add(compute, {a});
    p.add(all_reduce(GroupKind::Dp, StreamKind::Collective, 16 * MiB, 0));
    p.add(all_reduce(GroupKind::Dp, StreamKind::Collective, GiB, 2));
  }
  validate(plan);
  const Topology topo = switch_of(2);
  const auto fabric = nccl_fabric(topo, {0, 1});
  ASSERT_TRUE(fabric.has_value());
  CollectiveRequest req;
  req.op = CollectiveOp::AllReduce;
  req.ranks = 2;
  req.bytes = 16 * MiB;
  const NcclChoice small = nccl_choose(req, *fabric);
  req.bytes = GiB;
  const NcclChoice large = nccl_choose(req, *fabric);
  const Time alone = op_time(gemm, roofline_profile(device_preset("a100")));
  ASSERT_LT(small.time, alone);               // the short one ends during A
  ASSERT_GT(small.time + large.time, alone);  // the long one is in flight when B starts
  auto slowed = [&](int channels) { return on_free_sms(alone, 2048, 108 - channels, 8192); };

  PlanSimOptions full;
  full.fidelity = Fidelity::Full;
  const Trace f = simulate_plan(plan, topo, full);
  std::vector<Time> gemms;
  for (const Span& s : f.spans) {
    if (s.rank == 0 && f.names[s.name] == "second") gemms.push_back(s.end - s.start);
  }
  ASSERT_EQ(gemms.size(), 2u);
  EXPECT_NEAR(gemms[0].seconds(), slowed(small.channels).seconds(), 1e-12);
  EXPECT_NEAR(gemms[1].seconds(), slowed(large.channels).seconds(), 1e-12);
  EXPECT_GT(gemms[0], alone);
  EXPECT_GT(gemms[1], alone);

  PlanSimOptions coarse;
  coarse.fidelity = Fidelity::Coarse;
  PlanSimStats cs;
  const Trace c = simulate_plan(plan, topo, coarse, cs);
  ASSERT_EQ(cs.fidelity_used, Fidelity::Coarse);
  EXPECT_GT(cs.run_retimings, 0);
  EXPECT_EQ(c.step_time, f.step_time);
  EXPECT_EQ(span_time(c, 0, "second"), gemms[0] + gemms[1]);
}

// A GEMM of exactly one wave (108 tiles of 256 × 128 on the A100's 108 SMs) takes two beside any NCCL
// collective: the tail effect an NVIDIA forum report measured ("the gemm kernel's execution time
// nearly doubles" beside a 24-block all-gather on an H100), where the proportional slowdown would
// say 108/100: (2·(8192 + 135) + 530) / (8192 + 135 + 530) = 1.94 times, the kernel's fixed cost paid
// once. Its memory roof is far below: 2304 × 1536 × 8192 is compute-bound.
TEST(PlanSim, AOneWaveGemmBesideACollectiveTakesTwoWaves) {
  const Bytes bytes = 256 * MiB;
  const OpCost gemm = matmul_cost("gemm", OpCost::Kind::Gemm, OpCost::Phase::Forward, 2304, 1536, 8192, 1, DType::BF16);
  const Topology topo = switch_of(2);
  const DeviceSpec a100 = device_preset("a100");
  const Time alone = op_time(gemm, roofline_profile(a100));
  PlanSimOptions full;
  full.fidelity = Fidelity::Full;
  const Time beside = span_time(simulate_plan(reduce_beside(gemm, bytes, false), topo, full), 0, "second");
  // Times are whole picoseconds: the ratio holds to a few picoseconds over the time.
  const double alone_s = (alone - a100.launch_overhead).seconds();
  EXPECT_NEAR((beside - a100.launch_overhead).seconds() / alone_s, (2.0 * 8327 + 530) / (8327 + 530), 3e-12 / alone_s);
  EXPECT_NEAR(beside.seconds(), on_free_sms(alone, 108, 100, 8192).seconds(), 1e-12);
}

// A pipeline message that shares a link with a DP all-reduce slows it, and is slowed by it.
TEST(PlanSim, APipelineMessageSharingALinkWithAnAllReduceSlows) {
  const Bytes bytes = 256 * MiB;
  const BytesPerSec bw = 100 * GBps;
  auto plan_with = [&](bool reduce) {
    Plan plan = bare_plan(2);
    add_group(plan, GroupKind::Dp, {0, 1});
    const auto [send, recv] = message(bytes, 1, 2);
    plan.programs[0].add(send);
    plan.programs[1].add(recv);
    if (reduce) {
      for (Program& p : plan.programs) p.add(all_reduce(GroupKind::Dp, StreamKind::Collective, bytes, 0));
    }
    validate(plan);
    return plan;
  };
  const Topology topo = switch_of(2, bw);
  const Time message_alone = span_time(simulate_plan(plan_with(false), topo, full_ring()), 0, "message");
  EXPECT_EQ(message_alone, Time::us(2) + transfer_time(bytes, bw));
  const Trace t = simulate_plan(plan_with(true), topo, full_ring());
  EXPECT_GT(span_time(t, 0, "message"), message_alone);
  EXPECT_GT(span_time(t, 0, "first"), ring2(bytes, bw));
}

namespace {

// Two CPU ranks (no SMs, no NCCL) on switch_of's links; `polled`: their profile says communication is
// seen to finish only between compute ops (CommProgress::Polled), as the CPU backend runs.
Topology cpus(int ranks) {
  DeviceSpec cpu;
  cpu.name = "cpu";
  cpu.peak_fp32 = 1e12;
  cpu.peak_bf16 = 1e12;
  cpu.memory_bandwidth = 1e11;
  return topo::single_switch(ranks, {100 * GBps, Time::us(1)}, cpu);
}

Topology two_cpus() { return cpus(2); }

PlanSimOptions cpu_options(const Topology& topo, bool polled, Fidelity fidelity = Fidelity::Full) {
  PlanSimOptions o;
  o.fidelity = fidelity;
  o.collective_algorithm = "ring";
  o.profile = roofline_profile(topo.device(0));
  o.profile->progress = polled ? CommProgress::Polled : CommProgress::Independent;
  return o;
}

OpCost cube_gemm(const char* name, std::int64_t n) {
  return matmul_cost(name, OpCost::Kind::Gemm, OpCost::Phase::Forward, n, n, n, 1, DType::FP32);
}

// A GEMM on the Compute stream: cost `cost`, named `name`.
PlanOp gemm_op(std::uint32_t cost, std::uint32_t name) {
  PlanOp op;
  op.kind = OpKind::Compute;
  op.stream = StreamKind::Compute;
  op.span = SpanKind::Gemm;
  op.cost = cost;
  op.name = name;
  return op;
}

// Rank 0 computes "lead" (a 256³ GEMM), then sends `bytes` to rank 1 and computes "long" (2048³),
// both posted when "lead" ends; rank 1 computes "short" (1024³, an eighth of "long") from 0, receives,
// then computes "after", which needs the message.
Plan message_beside_compute(Bytes bytes) {
  Plan plan = bare_plan(2);
  plan.names = {"send", "recv", "long", "short", "after", "lead"};
  plan.costs = {cube_gemm("long", 2048), cube_gemm("short", 1024), cube_gemm("lead", 256)};
  auto [send, recv] = message(bytes, 3, 0);
  recv.name = 1;
  const std::uint32_t lead = plan.programs[0].add(gemm_op(2, 5));
  plan.programs[0].add(send, {lead});
  plan.programs[0].add(gemm_op(0, 2), {lead});
  plan.programs[1].add(gemm_op(1, 3));
  const std::uint32_t r = plan.programs[1].add(recv);
  plan.programs[1].add(gemm_op(1, 4), {r});
  validate(plan);
  return plan;
}

}  // namespace

// A collective's span starts where its rank posted it, as the real backends record it: the wait for
// the other members is part of it. Rank 0 computes, then all-reduces; rank 1 all-reduces at once.
TEST(PlanSim, ACollectiveSpanStartsWhereItsRankPostedIt) {
  const Topology topo = two_cpus();
  auto [plan, compute] = dp_pair_computing(cube_gemm("gemm", 1024));
  const std::uint32_t first = plan.programs[0].add(compute);
  plan.programs[0].add(all_reduce(GroupKind::Dp, StreamKind::Collective, MiB, 0), {first});
  plan.programs[1].add(all_reduce(GroupKind::Dp, StreamKind::Collective, MiB, 0));
  validate(plan);
  const Trace t = simulate_plan(plan, topo, cpu_options(topo, false));
  const Span gemm = span_named(t, 0, "second");
  const Span late = span_named(t, 0, "first"), early = span_named(t, 1, "first");
  EXPECT_EQ(late.start, gemm.end);
  EXPECT_EQ(early.start, Time{}) << "rank 1 posted it at 0 and waited for rank 0";
  EXPECT_EQ(early.end, late.end);
  EXPECT_GT(late.end, late.start);
}

// Two ranks: `gemm` on the Compute stream from 0 ("second"); on the Collective stream a 2048³ GEMM
// ("lead") beside it, then a 2 GiB DP all-reduce ("first"), posted when "lead" ends.
Plan reduce_posted_during(const OpCost& gemm) {
  auto [plan, compute] = dp_pair_computing(gemm);
  plan.costs.push_back(matmul_cost("lead", OpCost::Kind::Gemm, OpCost::Phase::Forward, 2048, 2048, 2048, 1, DType::BF16));
  plan.names.push_back("lead");
  for (Program& p : plan.programs) {
    p.add(compute);
    PlanOp lead = compute;
    lead.stream = StreamKind::Collective;
    lead.cost = 1;
    lead.name = 3;
    p.add(all_reduce(GroupKind::Dp, StreamKind::Collective, 2 * GiB, 0), {p.add(lead)});
  }
  validate(plan);
  return plan;
}

// A collective posted while a GEMM runs slows the rest of it (plan_sim.cpp, change_beside): on two
// A100s an 8192³ BF16 GEMM runs from 0 on the Compute stream; on the Collective stream a 2048³ GEMM
// ("lead") runs beside it, then a 2 GiB all-reduce (8 CTAs, outlasting both). The big GEMM's share
// done when the all-reduce starts ran on all 108 SMs, the rest runs on the 100 it leaves.
TEST(PlanSim, ACollectivePostedDuringAGemmSlowsTheRestOfIt) {
  const OpCost gemm = matmul_cost("gemm", OpCost::Kind::Gemm, OpCost::Phase::Forward, 8192, 8192, 8192, 1, DType::BF16);
  const Plan plan = reduce_posted_during(gemm);
  PlanSimOptions full;
  full.fidelity = Fidelity::Full;
  const Trace t = simulate_plan(plan, switch_of(2), full);
  const DeviceSpec a100 = device_preset("a100");
  const Time alone = op_time(gemm, roofline_profile(a100));
  const Time slow = on_free_sms(alone, 2048, 100, 8192);
  const Span big = span_named(t, 0, "second"), lead = span_named(t, 0, "lead"), reduce = span_named(t, 0, "first");
  EXPECT_EQ(big.start, Time{});
  EXPECT_EQ(lead.end - lead.start, op_time(plan.costs[1], roofline_profile(a100)));  // nothing beside it
  EXPECT_EQ(reduce.start, lead.end);
  ASSERT_GT(reduce.end, big.end);
  const double c = lead.end.seconds();
  EXPECT_NEAR((big.end - big.start).seconds(), c + (1 - c / alone.seconds()) * slow.seconds(), 1e-9);
  EXPECT_GT(big.end - big.start, alone);
}

// Hopper's GEMMs are persistent kernels (device.cpp, DeviceSpec::persistent_gemm: pytorch/pytorch issue
// #143988): one CTA per SM, each with its share of the tiles. Beside NCCL's CTAs some find no SM and
// start once one is free: after the first CTAs end (2 × its time alone) if the collective outlasts
// them, or when the collective ends (c + its time alone). A GEMM of fewer tiles than the SMs left runs as
// alone, and a collective posted while a persistent GEMM runs does not slow it (its CTAs hold their SMs).
TEST(PlanSim, APersistentGemmBesideNcclRunsItsLateCtasWhenSmsFreeUp) {
  const DeviceSpec h100 = device_preset("h100");
  ASSERT_TRUE(h100.persistent_gemm);
  const Topology topo = topo::single_switch(2, {100 * GBps, Time::us(1)}, h100);
  const OpCost gemm = matmul_cost("gemm", OpCost::Kind::Gemm, OpCost::Phase::Forward, 8192, 8192, 8192, 1, DType::BF16);
  const OpCost small = matmul_cost("small", OpCost::Kind::Gemm, OpCost::Phase::Forward, 1024, 1024, 8192, 1, DType::BF16);
  const ComputeProfile profile = roofline_profile(h100);
  EXPECT_EQ(persistent_ctas(gemm, profile.shapes), 132);
  EXPECT_EQ(persistent_ctas(small, profile.shapes), 32);  // 8 × 4 tiles of 128 × 256
  EXPECT_EQ(persistent_ctas(gemm, roofline_profile(device_preset("a100")).shapes), 0);
  PlanSimOptions full;
  full.fidelity = Fidelity::Full;
  const Time alone = op_time(gemm, profile);
  // Beside a 2 GiB all-reduce that outlasts it: twice its time alone.
  const Trace whole = simulate_plan(reduce_beside(gemm, 2 * GiB, false), topo, full);
  ASSERT_GT(span_named(whole, 0, "first").end, span_named(whole, 0, "second").end);
  EXPECT_EQ(span_time(whole, 0, "second"), alone + alone);
  // Beside a 64 MiB one that ends c into it: its late CTAs start then.
  const Trace t = simulate_plan(reduce_beside(gemm, 64 * MiB, false), topo, full);
  const Time c = span_named(t, 0, "first").end - span_named(t, 0, "second").start;
  ASSERT_GT(c, Time{});
  ASSERT_LT(c, alone);
  EXPECT_EQ(span_time(t, 0, "second"), c + alone);
  // Fewer tiles than the SMs NCCL leaves: as alone.
  EXPECT_EQ(span_time(simulate_plan(reduce_beside(small, 2 * GiB, false), topo, full), 0, "second"), op_time(small, profile));
  // Started alone, it keeps its SMs when an all-reduce is posted during it.
  const Trace during = simulate_plan(reduce_posted_during(gemm), topo, full);
  ASSERT_GT(span_named(during, 0, "first").start, span_named(during, 0, "second").start);
  ASSERT_LT(span_named(during, 0, "first").start, span_named(during, 0, "second").end);
  EXPECT_EQ(span_time(during, 0, "second"), alone);
}

// Compute ops of one rank on two streams run side by side (a technique kernel on the Collective stream
// beside the layer's ops), and each span keeps its own start: both start at 0, the long one ending
// after the short one; the op after the short one starts where it ends.
TEST(PlanSim, ComputeOpsOnTwoStreamsOfOneRankEachRecordTheirOwnStart) {
  Plan plan = bare_plan(1);
  plan.names.push_back("third");
  plan.costs.push_back(matmul_cost("long", OpCost::Kind::Gemm, OpCost::Phase::Forward, 8192, 8192, 8192, 1, DType::BF16));
  plan.costs.push_back(matmul_cost("short", OpCost::Kind::Gemm, OpCost::Phase::Forward, 1024, 1024, 1024, 1, DType::BF16));
  PlanOp op;
  op.kind = OpKind::Compute;
  op.span = SpanKind::Gemm;
  op.stream = StreamKind::Compute;
  op.cost = 0;
  op.name = 0;  // "first"
  plan.programs[0].add(op);
  op.stream = StreamKind::Collective;
  op.cost = 1;
  op.name = 1;  // "second"
  const std::uint32_t short_op = plan.programs[0].add(op);
  op.name = 3;  // "third", after "second" on its stream
  plan.programs[0].add(op, {short_op});
  validate(plan);
  PlanSimOptions full;
  full.fidelity = Fidelity::Full;
  const Trace t = simulate_plan(plan, switch_of(1), full);
  const Span first = span_named(t, 0, "first"), second = span_named(t, 0, "second"), third = span_named(t, 0, "third");
  EXPECT_EQ(first.start, Time{});
  EXPECT_EQ(second.start, Time{});
  EXPECT_GT(first.end, second.end);
  EXPECT_EQ(third.start, second.end);
  EXPECT_LT(third.end, first.end) << "the short ops ran beside the long one";
}

// Polled progress (CommProgress::Polled), a message above MPI's eager limit: its data moves once the
// receiver polls (rank 1 ends "short"), and the sender sees it done when it polls next (rank 0 ends
// "long"). With independent progress the message flies at once and the sender sees it arrive. A
// message within the eager limit moves at once either way; the ranks still see it at their polls.
TEST(PlanSim, PolledProgressSeesCommunicationBetweenComputeOps) {
  const Topology topo = two_cpus();
  const Trace independent = simulate_plan(message_beside_compute(MiB), topo, cpu_options(topo, false));
  const Span sent = span_named(independent, 0, "send");
  const Time d = sent.end - sent.start;
  const Time lead_end = span_named(independent, 0, "lead").end;
  const Time long_end = span_named(independent, 0, "long").end;
  const Time short_end = span_named(independent, 1, "short").end;
  ASSERT_GT(d, Time{});
  ASSERT_LT(lead_end, short_end);
  ASSERT_LT(short_end + d, long_end);
  EXPECT_EQ(sent.start, lead_end);
  EXPECT_EQ(span_named(independent, 1, "after").start, short_end);  // the message was there already

  const Trace polled = simulate_plan(message_beside_compute(MiB), topo, cpu_options(topo, true));
  EXPECT_EQ(span_named(polled, 0, "send").start, lead_end);
  EXPECT_EQ(span_named(polled, 0, "send").end, long_end);
  EXPECT_EQ(span_named(polled, 1, "after").start, short_end + d);  // moved only after rank 1 polled

  const Trace eager = simulate_plan(message_beside_compute(4096), topo, cpu_options(topo, true));
  EXPECT_EQ(span_named(eager, 0, "send").end, long_end);
  EXPECT_EQ(span_named(eager, 1, "after").start, short_end);

  // Coarse does not merge polled ranks' compute ops (each op's end is a poll): the same spans.
  const Trace coarse = simulate_plan(message_beside_compute(MiB), topo, cpu_options(topo, true, Fidelity::Coarse));
  EXPECT_EQ(coarse.spans, polled.spans);
}

// Polled progress, a collective: rank 0 posts an all-reduce and computes beside it; rank 1 only
// all-reduces. Rank 1 sees it end when it does; rank 0 when its compute op ends.
TEST(PlanSim, PolledProgressSeesACollectiveEndAtTheNextPoll) {
  const Topology topo = two_cpus();
  const OpCost gemm = cube_gemm("gemm", 2048);
  auto [plan, compute] = dp_pair_computing(gemm);
  plan.programs[0].add(all_reduce(GroupKind::Dp, StreamKind::Collective, MiB, 0));
  plan.programs[0].add(compute);
  plan.programs[1].add(all_reduce(GroupKind::Dp, StreamKind::Collective, MiB, 0));
  validate(plan);
  const Trace independent = simulate_plan(plan, topo, cpu_options(topo, false));
  const Time reduce = span_named(independent, 1, "first").end;
  const Time gemm_end = span_named(independent, 0, "second").end;
  ASSERT_LT(reduce, gemm_end);
  EXPECT_EQ(span_named(independent, 0, "first").end, reduce);

  const Trace polled = simulate_plan(plan, topo, cpu_options(topo, true));
  EXPECT_EQ(span_named(polled, 1, "first").end, reduce);
  EXPECT_EQ(span_named(polled, 0, "first").end, gemm_end);
  EXPECT_EQ(polled.step_time, independent.step_time);
}

// Ranks that share a machine's cores (PlanSimOptions::shared_cores) take them in turn: four ranks each
// computing one GEMM of time X on two cores, two end at X and two (which wait for a core, then run X) at
// 2X. With as many cores as ranks nothing waits. A profile measured with four ranks
// computing at once on the two cores timed each rank at half a core: alone, an op takes X / 2.
TEST(PlanSim, RanksSharingCoresTakeThemInTurn) {
  const Topology topo = cpus(4);
  Plan plan = bare_plan(4);
  plan.costs = {cube_gemm("first", 1024)};
  for (int r = 0; r < 4; ++r) plan.programs[static_cast<std::size_t>(r)].add(gemm_op(0, 0));
  validate(plan);
  PlanSimOptions options = cpu_options(topo, true);
  const Trace own = simulate_plan(plan, topo, options);
  const Time x = own.step_time;
  ASSERT_GT(x, Time{});
  for (int r = 0; r < 4; ++r) EXPECT_EQ(span_named(own, r, "first").start, Time{});

  options.shared_cores = 2;
  const Trace shared = simulate_plan(plan, topo, options);
  EXPECT_EQ(shared.step_time, x * 2);
  int waited = 0;
  for (int r = 0; r < 4; ++r) {
    const Span s = span_named(shared, r, "first");
    EXPECT_TRUE(s.start == Time{} || s.start == x) << r;
    waited += s.start == x ? 1 : 0;
    EXPECT_EQ(s.end - s.start, x) << r;  // once it has a core, an op runs its alone time
  }
  EXPECT_EQ(waited, 2);
  options.shared_cores = 4;
  EXPECT_EQ(simulate_plan(plan, topo, options).step_time, x);

  options.shared_cores = 2;
  options.profile->provenance = Provenance{"vm", "", "", 4, "twinbed calibrate", 2};
  const Trace measured_shared = simulate_plan(plan, topo, options);
  const Time half = Time::from_seconds(x.seconds() / 2);
  EXPECT_EQ(measured_shared.step_time, half * 2);
  EXPECT_EQ(span_named(measured_shared, 0, "first").end - span_named(measured_shared, 0, "first").start, half);

  options.fidelity = Fidelity::Representative;
  EXPECT_THROW(simulate_plan(plan, topo, options), InvalidArgument);
}

// A rank waiting for communication gives its core away and sees the wait end only once it holds one
// again. Three ranks on one core: ranks 0 and 1 each compute "short" (256³), then all-reduce 1 MiB;
// rank 1 also sends rank 2 a 1 KiB message, on which rank 2 computes "long" (2048³). Ranks 0 and 1
// take the core in turn; rank 2 takes it when rank 1 has sent and both have posted, and holds it
// through "long", so the all-reduce, done long before, ends for ranks 0 and 1 when "long" does. With a
// core for each rank it ends when the all-reduce does.
TEST(PlanSim, ARankSeesItsWaitEndOnlyWithACore) {
  const Topology topo = cpus(3);
  Plan plan = bare_plan(3);
  plan.names = {"reduce", "message", "short", "long"};
  plan.costs = {cube_gemm("short", 256), cube_gemm("long", 2048)};
  add_group(plan, GroupKind::Dp, {0, 1});
  auto [send, recv] = message(1024, 7, 1);
  send.peer_offset = 1;
  recv.peer_offset = -1;
  for (int r = 0; r < 2; ++r) {
    Program& p = plan.programs[static_cast<std::size_t>(r)];
    const std::uint32_t computed = p.add(gemm_op(0, 2));
    p.add(all_reduce(GroupKind::Dp, StreamKind::Collective, MiB, 0), {computed});
    if (r == 1) p.add(send, {computed});
  }
  const std::uint32_t got = plan.programs[2].add(recv);
  plan.programs[2].add(gemm_op(1, 3), {got});
  validate(plan);
  PlanSimOptions options = cpu_options(topo, true);

  options.shared_cores = 3;
  const Trace own = simulate_plan(plan, topo, options);
  const Span reduce = span_named(own, 0, "reduce");
  const Time long_end = span_named(own, 2, "long").end;
  ASSERT_LT(reduce.end, long_end);

  options.shared_cores = 1;
  const Trace shared = simulate_plan(plan, topo, options);
  const Span long_op = span_named(shared, 2, "long");
  EXPECT_EQ(long_op.end - long_op.start, long_end - span_named(own, 2, "long").start);  // its alone time
  for (int r = 0; r < 2; ++r) {
    const Span s = span_named(shared, r, "reduce");
    EXPECT_LE(s.start, long_op.start) << r;
    EXPECT_EQ(s.end, long_op.end) << r << ": it waited for the core rank 2 held";
  }
}

// A CPU rank's cache (cache_residency.hpp): where the profile measured how fast the caches lose data,
// an 8 MB stream that follows a wait of some half-lives reads most of its bytes from memory, at the
// memory's bandwidth; the same stream at the step's start finds its data as the step before left it,
// in cache. Rank 0 streams, waits for rank 1's message (sent after a long GEMM), streams again.
TEST(PlanSim, AStreamAfterAWaitFindsItsDataGoneFromTheCache) {
  const Topology topo = cpus(2);
  Plan plan = bare_plan(2);
  plan.names = {"stream", "again", "message", "long"};
  OpCost stream;
  stream.name = "stream";
  stream.kind = OpCost::Kind::MemoryBound;
  stream.bytes = 8'000'000;
  stream.dtype = DType::FP32;
  plan.costs = {stream, cube_gemm("long", 2048)};
  PlanOp streaming;
  streaming.kind = OpKind::Compute;
  streaming.stream = StreamKind::Compute;
  streaming.span = SpanKind::MemoryBound;
  streaming.cost = 0;
  auto [send, recv] = message(1024, 7, 2);
  send.peer_offset = -1;  // rank 1 to rank 0
  recv.peer_offset = 1;
  Program& p0 = plan.programs[0];
  const std::uint32_t first = p0.add(streaming);
  const std::uint32_t got = p0.add(recv, {first});
  streaming.name = 1;
  p0.add(streaming, {got});
  Program& p1 = plan.programs[1];
  p1.add(send, {p1.add(gemm_op(1, 3))});
  validate(plan);

  PlanSimOptions options = cpu_options(topo, false);
  options.profile->memory_bandwidth = 10 * GBps;
  options.profile->memory_samples = {{8'000'000, 40 * GBps}, {1'000'000'000, 10 * GBps}};
  const Trace warm = simulate_plan(plan, topo, options);
  const Time alone = span_named(warm, 0, "stream").end - span_named(warm, 0, "stream").start;
  EXPECT_EQ(span_named(warm, 0, "again").end - span_named(warm, 0, "again").start, alone);

  options.profile->cache_half_life = Time::ms(1);
  PlanSimStats stats;
  const Trace t = simulate_plan(plan, topo, options, stats);
  const Span s1 = span_named(t, 0, "stream"), s2 = span_named(t, 0, "again");
  EXPECT_EQ(s1.end - s1.start, alone);
  const double half_lives = (s2.start - s1.end).seconds() / 1e-3;
  ASSERT_GT(half_lives, 3);
  const double cold = 8e6 * (1 - std::exp2(-half_lives));
  EXPECT_NEAR((s2.end - s2.start - alone).seconds(), cold * (1 / 10e9 - 1 / 40e9), 1e-11);
  // The statistics count what the model added: the second stream's cold bytes and time.
  EXPECT_NEAR(stats.cold_bytes, cold, 1e-3);
  EXPECT_NEAR(stats.cold_time.seconds(), (s2.end - s2.start - alone).seconds(), 1e-11);
}

// The experiment's "simulation" options reach the simulator's: the NCCL release `auto` models.
TEST(PlanSim, OptionsCarryTheExperimentsNcclVersion) {
  const Topology topo = fat_tree_8();
  Experiment e;
  EXPECT_EQ(plan_sim_options(e, topo).nccl_minor, 20);
  e.simulation.nccl_minor = 24;
  EXPECT_EQ(plan_sim_options(e, topo).nccl_minor, 24);
}

// Backends are found by name: the simulator registers itself as "sim" and runs as simulate_plan does
// with the experiment's options; an unknown name lists the known ones.
TEST(PlanSim, TheSimulatorIsTheBackendNamedSim) {
  BackendRegistry registry("backend");
  add_sim_backend(registry);
  EXPECT_EQ(registry.names(), std::vector<std::string>{"sim"});
  Experiment e;
  e.simulation.fidelity = "full";
  const Topology topo = fat_tree_8();
  const Plan plan = build_plan(small_model(), layout3d(2, 2, 2, 4), {8, 4});
  const std::unique_ptr<Backend> backend = registry.get("sim")(BackendSetup{&e, &topo});
  EXPECT_EQ(backend->name(), "sim");
  EXPECT_EQ(backend->run(plan), simulate_plan(plan, topo, plan_sim_options(e, topo)));
  try {
    registry.get("gpu");
    ADD_FAILURE() << "no exception";
  } catch (const UnknownName& err) {
    EXPECT_NE(std::string(err.what()).find("sim"), std::string::npos) << err.what();
  }
}

TEST(PlanSim, FidelityNames) {
  for (const auto& n : fidelity_names()) EXPECT_EQ(to_string(parse_fidelity(n)), n);
  EXPECT_THROW(parse_fidelity("exact"), UnknownName);
  const Layout l = layout3d(1, 1, 1, 1);
  const Plan plan = build_plan(small_model(), l, {1, 1});
  PlanSimOptions o;
  o.network = "nope";
  EXPECT_THROW(simulate_plan(plan, switch_of(1), o), UnknownName);
  EXPECT_THROW(simulate_plan(plan, switch_of(2), {}), InvalidArgument);
}

TEST(ComputeModel, RooflineAndProfile) {
  const DeviceSpec a100 = device_preset("a100");
  const ComputeProfile p = roofline_profile(a100);
  EXPECT_DOUBLE_EQ(p.gemm_rate.at(DType::BF16), 0.82 * a100.peak_bf16);
  EXPECT_DOUBLE_EQ(p.memory_bandwidth, 0.87 * a100.memory_bandwidth);
  EXPECT_DOUBLE_EQ(roofline_profile(device_preset("h100")).memory_bandwidth, 0.9 * device_preset("h100").memory_bandwidth);
  // Hopper's FP8 ceiling is measured apart from its BF16 one; elsewhere FP8 takes the GEMM ceiling.
  const DeviceSpec h100 = device_preset("h100");
  EXPECT_DOUBLE_EQ(roofline_profile(h100).gemm_rate.at(DType::FP8), 0.70 * h100.peak_fp8);
  EXPECT_DOUBLE_EQ(roofline_profile(h100).gemm_rate.at(DType::BF16), 0.76 * h100.peak_bf16);
  EXPECT_DOUBLE_EQ(roofline_profile(device_preset("h200")).gemm_rate.at(DType::BF16), 0.76 * device_preset("h200").peak_bf16);
  DeviceSpec other = h100;
  other.name = "other";
  EXPECT_DOUBLE_EQ(roofline_profile(other).gemm_rate.at(DType::FP8), 0.80 * h100.peak_fp8);
  OpCost gemm;
  gemm.kind = OpCost::Kind::Gemm;
  gemm.flops = 2.0 * 4096 * 4096 * 4096;
  gemm.bytes = 3 * 4096 * 4096 * 2;
  EXPECT_EQ(op_time(gemm, p), a100.launch_overhead + Time::from_seconds(gemm.flops / (0.82 * a100.peak_bf16)));
  OpCost mem;
  mem.bytes = 1 << 30;
  EXPECT_EQ(op_time(mem, p), a100.launch_overhead + Time::from_seconds(double(1 << 30) / (0.87 * a100.memory_bandwidth)));

  const auto j = nlohmann::json::parse(
      R"({"device": "my-a100", "gemm_TFLOPs": {"bf16": 250}, "memory_bandwidth_GBps": 1800, "launch_overhead_us": 3})");
  const ComputeProfile q = profile_from_json(j, a100);
  EXPECT_DOUBLE_EQ(q.gemm_rate.at(DType::BF16), 250e12);
  EXPECT_EQ(q.launch_overhead, Time::us(3));
  EXPECT_EQ(profile_from_json(profile_to_json(q), a100), q);
  try {
    profile_from_json(nlohmann::json::parse(R"({"gemm_TFLOPS": {}})"), a100);
    ADD_FAILURE();
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.path(), "/gemm_TFLOPS");
  }
  // A slower measured profile slows the step.
  const Layout l = layout3d(1, 1, 1, 1);
  const Plan plan = build_plan(small_model(), l, {1, 1});
  PlanSimOptions slow;
  slow.profile = q;
  slow.profile->gemm_rate[DType::BF16] = 10e12;
  EXPECT_GT(simulate_plan(plan, switch_of(1), slow).step_time, simulate_plan(plan, switch_of(1), {}).step_time);
}

