// The technique passes' Plans through the simulator: what each change buys (or not) in time and memory.
#include <gtest/gtest.h>

#include "support/layouts.hpp"
#include "twinbed/core/passes/dsa.hpp"
#include "twinbed/core/passes/lora.hpp"
#include "twinbed/core/passes/tgc.hpp"
#include "twinbed/core/passes/zrdf.hpp"
#include "twinbed/core/report.hpp"
#include "twinbed/core/topology_builders.hpp"
#include "twinbed/sim/plan_sim.hpp"

using namespace twinbed;
using twinbed::test_support::layout3d;
using namespace twinbed::sim;

namespace {

Topology switch_of(int ranks, double gbps) {
  return topo::single_switch(ranks, {gbps * GBps, Time::us(2)}, device_preset("a100"));
}

struct SimResult {
  Trace trace;
  Report report;
};

SimResult simulate(const Plan& plan, const Topology& t) {
  PlanSimOptions o;
  o.fidelity = Fidelity::Full;
  SimResult r;
  r.trace = simulate_plan(plan, t, o);
  r.report = report(r.trace, report_inputs(plan, t.device(0)));
  return r;
}

Time kind_time(const Report& r, SpanKind k) {
  for (const OpKindRow& row : r.op_kinds) {
    if (row.kind == k) return row.per_rank;
  }
  return Time{};
}

const TransformerModel kModel = gpt_model("m", 4, 1024, 16, 512, 8192);

}  // namespace

TEST(PlanPasses, LoraIsFasterAndSmallerThanFullTraining) {
  const Topology t = switch_of(4, 25);
  const Plan base = build_plan(kModel, layout3d(4, 1, 1, 4), {4, 4});
  Plan lora = base;
  apply_lora(lora, LoraParams{8, 16, {ParamKind::Qkv, ParamKind::Proj}});
  const SimResult a = simulate(base, t), b = simulate(lora, t);
  EXPECT_LT(b.report.step_time, a.report.step_time);
  EXPECT_LT(b.report.peak_memory, a.report.peak_memory);
  EXPECT_LT(kind_time(b.report, SpanKind::Collective), Time::ps(kind_time(a.report, SpanKind::Collective).picoseconds() / 10));
  EXPECT_EQ(b.report.inputs.model_flops, a.report.inputs.model_flops);  // MFU stays comparable
  EXPECT_LT(b.report.inputs.executed_flops, a.report.inputs.executed_flops);
}

TEST(PlanPasses, DsaFlopsCutBecomesTimeOnlyWhereTheGranularityAllows) {
  const Topology t = switch_of(2, 100);
  const Plan base = build_plan(kModel, layout3d(2, 1, 1, 4), {2, 2});
  auto gemm_time = [&](DsaParams::Granularity g, DsaParams::Mode mode) {
    Plan plan = base;
    DsaParams p;
    p.density = g == DsaParams::Granularity::NM ? 0.5 : 0.5;
    p.granularity = g;
    p.mode = mode;
    apply_dsa(plan, p);
    const SimResult r = simulate(plan, t);
    EXPECT_LT(r.report.inputs.executed_flops, base.executed_flops());
    return kind_time(r.report, SpanKind::Gemm);
  };
  const Time dense = kind_time(simulate(base, t).report, SpanKind::Gemm);
  // Unstructured masks: fewer FLOPs, no GEMM time saved on dense hardware.
  EXPECT_EQ(gemm_time(DsaParams::Granularity::Unstructured, DsaParams::Mode::Prune), dense);
  // Blocks are skipped; 2:4 runs the forward on the sparse tensor cores (1.25x), nothing else.
  const Time block = gemm_time(DsaParams::Granularity::Block, DsaParams::Mode::Prune);
  const Time nm = gemm_time(DsaParams::Granularity::NM, DsaParams::Mode::Prune);
  EXPECT_LT(block, nm);
  EXPECT_LT(nm, dense);
  EXPECT_GT(nm, Time::ps(dense.picoseconds() * 2 / 3));  // only the forward third, and only by 1.25x
}

TEST(PlanPasses, TgcShortensTheReductionOnASlowNetworkButSparseGatherGrowsWithRanks) {
  const Plan base = build_plan(kModel, layout3d(8, 1, 1, 2), {8, 8});
  const Topology slow = switch_of(8, 1);
  auto comm = [&](const TgcParams& p) {
    Plan plan = base;
    apply_tgc(plan, p);
    return kind_time(simulate(plan, slow).report, SpanKind::Collective);
  };
  TgcParams q4;
  q4.bits = 4;
  TgcParams sparse;
  sparse.topk_fraction = 0.05;
  const Time dense = kind_time(simulate(base, slow).report, SpanKind::Collective);
  EXPECT_LT(comm(q4), Time::ps(dense.picoseconds() / 3));  // ~4x fewer bytes in a ring
  // 5% of the entries at 8 B each, gathered from 8 ranks: 8·0.05·4 = 1.6x the 16-bit dense ring's
  // per-rank volume of ~2·(7/8): no faster than the ring.
  EXPECT_GT(comm(sparse), Time::ps(dense.picoseconds() * 7 / 10));
}

TEST(PlanPasses, ZrdfArenaIsTheSimulatedMemory) {
  const Topology t = switch_of(2, 100);
  Plan plan = build_plan(kModel, layout3d(2, 1, 1, 4), {2, 2});
  const SimResult before = simulate(plan, t);
  apply_zrdf(plan, ZrdfParams{});
  const SimResult after = simulate(plan, t);
  EXPECT_EQ(after.report.peak_memory, plan.programs[0].arena.size);
  EXPECT_GE(after.report.peak_memory, before.report.peak_memory);  // live bytes are the lower bound
  EXPECT_EQ(after.report.step_time, before.report.step_time);      // no op changes
}
