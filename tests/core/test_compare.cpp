// compare(): a simulated report against a measured one, on reports of hand-made traces whose errors are
// worked out by hand.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "twinbed/core/compare.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/report.hpp"

namespace twinbed {
namespace {

Span span(int rank, SpanKind kind, std::uint32_t name, double start_us, double end_us) {
  Span s;
  s.rank = rank;
  s.stream = kind == SpanKind::Collective ? StreamKind::Collective : StreamKind::Compute;
  s.kind = kind;
  s.name = name;
  s.start = Time::us(start_us);
  s.end = Time::us(end_us);
  return s;
}

// Two ranks running gemm "a" and "b", a collective "ar", and (measured only) a memory-bound "m"; every
// time `f` times as long (a run on a slower machine).
Report measured(double f = 1) {
  Trace t;
  t.world_size = 2;
  t.names = {"a", "b", "ar", "m"};
  t.spans = {span(0, SpanKind::Gemm, 0, 0, 4 * f),  span(1, SpanKind::Gemm, 0, 0, 2 * f),  // a: mean 3 us
             span(0, SpanKind::Gemm, 1, 4 * f, 6 * f),  span(1, SpanKind::Gemm, 1, 2 * f, 4 * f),  // b: mean 2 us
             span(0, SpanKind::Collective, 2, 6 * f, 10 * f), span(1, SpanKind::Collective, 2, 6 * f, 10 * f),
             span(1, SpanKind::MemoryBound, 3, 10 * f, 11 * f)};
  t.step_time = Time::us(11 * f);
  return report(t, ReportInputs{});
}

// The simulation: "a" 4 us (+33%), "b" 1.5 us (−25%), "ar" 4 us (0%), no memory-bound op; step 8 us;
// likewise `f` times as long.
Report simulated(double f = 1) {
  Trace t;
  t.world_size = 2;
  t.names = {"a", "b", "ar"};
  t.recorded_rank = {0, 0};  // one rank stands for both
  t.spans = {span(0, SpanKind::Gemm, 0, 0, 4 * f), span(0, SpanKind::Gemm, 1, 4 * f, 5.5 * f),
             span(0, SpanKind::Collective, 2, 5.5 * f, 9.5 * f)};
  t.step_time = Time::us(8 * f);
  return report(t, ReportInputs{});
}

TEST(Compare, ErrorAndMedian) {
  EXPECT_DOUBLE_EQ(error_pct(12, 10), 20);
  EXPECT_DOUBLE_EQ(error_pct(8, 10), -20);
  EXPECT_EQ(error_pct(1, 0), 0);
  EXPECT_DOUBLE_EQ(median({3, 1, 2}), 2);
  EXPECT_DOUBLE_EQ(median({4, 1, 3, 2}), 2.5);
  EXPECT_TRUE(std::isnan(median({})));
}

TEST(Compare, PerKindStepAndPerOpErrors) {
  const Comparison c = compare(simulated(), measured());
  // Per kind, per rank: gemm measured (4+2+2+2)/2 = 5 us, simulated (4+1.5)·2/2 = 5.5 us; collective 4 and
  // 4; memory-bound 0.5 measured, none simulated.
  ASSERT_EQ(c.kinds.size(), 3u);
  EXPECT_EQ(c.kinds[0].kind, SpanKind::Gemm);
  EXPECT_NEAR(c.kinds[0].measured_s, 5e-6, 1e-18);
  EXPECT_NEAR(c.kinds[0].simulated_s, 5.5e-6, 1e-18);
  EXPECT_NEAR(c.kinds[0].error_pct, 10, 1e-9);
  EXPECT_EQ(c.kinds[1].kind, SpanKind::MemoryBound);
  EXPECT_EQ(c.kinds[1].simulated_s, 0);
  EXPECT_NEAR(c.kinds[1].error_pct, -100, 1e-9);
  EXPECT_EQ(c.kinds[2].kind, SpanKind::Collective);
  EXPECT_NEAR(c.kinds[2].error_pct, 0, 1e-9);
  EXPECT_NEAR(c.step_measured_s, 11e-6, 1e-18);
  EXPECT_NEAR(c.step_simulated_s, 8e-6, 1e-18);
  EXPECT_NEAR(c.step_error_pct, -300.0 / 11, 1e-9);
  // Per op: gemm a +33.3%, b −25%: median |error| 29.17%; the collective 0%; no memory-bound op in both.
  ASSERT_EQ(c.per_op.size(), 2u);
  EXPECT_EQ(c.per_op[0].kind, SpanKind::Gemm);
  ASSERT_EQ(c.per_op[0].ops.size(), 2u);
  EXPECT_EQ(c.per_op[0].ops[0].name, "a");
  EXPECT_NEAR(c.per_op[0].ops[0].measured_s, 3e-6, 1e-18);
  EXPECT_NEAR(c.per_op[0].ops[0].simulated_s, 4e-6, 1e-18);
  EXPECT_EQ(c.per_op[0].ops[1].name, "b");
  EXPECT_NEAR(c.per_op[0].median_abs_error_pct, (100.0 / 3 + 25) / 2, 1e-9);
  EXPECT_EQ(c.per_op[1].kind, SpanKind::Collective);
  EXPECT_NEAR(c.per_op[1].median_abs_error_pct, 0, 1e-9);
}

TEST(Compare, AReportComparedWithItselfHasNoError) {
  const Comparison c = compare(measured(), measured());
  for (const KindComparison& k : c.kinds) EXPECT_EQ(k.error_pct, 0);
  for (const KindOpsComparison& k : c.per_op) EXPECT_EQ(k.median_abs_error_pct, 0);
  EXPECT_EQ(c.step_error_pct, 0);
}

TEST(CompareRepeated, MedianAndRangeOverRuns) {
  // Three measured runs: the measured trace, then the same with every span twice as long, then half.
  const RepeatedComparison r = compare_repeated(simulated(), {measured(1), measured(2), measured(0.5)});
  EXPECT_EQ(r.runs, 3);
  ASSERT_EQ(r.kinds.size(), 3u);
  EXPECT_EQ(r.kinds[0].kind, SpanKind::Gemm);
  // gemm per rank: 5, 10, 2.5 us measured against 5.5 simulated: errors +10%, −45%, +120%.
  EXPECT_NEAR(r.kinds[0].measured_s.median, 5e-6, 1e-15);
  EXPECT_NEAR(r.kinds[0].measured_s.min, 2.5e-6, 1e-15);
  EXPECT_NEAR(r.kinds[0].measured_s.max, 10e-6, 1e-15);
  EXPECT_NEAR(r.kinds[0].error_pct.median, 10, 1e-6);
  EXPECT_NEAR(r.kinds[0].error_pct.min, -45, 1e-6);
  EXPECT_NEAR(r.kinds[0].error_pct.max, 120, 1e-6);
  // step: 11, 22, 5.5 us against 8.
  EXPECT_NEAR(r.step_measured_s.median, 11e-6, 1e-15);
  EXPECT_NEAR(r.step_error_pct.min, error_pct(8, 22), 1e-6);
  EXPECT_NEAR(r.step_error_pct.max, error_pct(8, 5.5), 1e-6);
  ASSERT_EQ(r.per_op.size(), 2u);
  EXPECT_EQ(r.per_op[0].kind, SpanKind::Gemm);
  EXPECT_LE(r.per_op[0].median_abs_error_pct.min, r.per_op[0].median_abs_error_pct.median);
  // One run: its own comparison, with no range.
  const RepeatedComparison one = compare_repeated(simulated(), {measured()});
  const Comparison c = compare(simulated(), measured());
  EXPECT_EQ(one.step_error_pct.median, c.step_error_pct);
  EXPECT_EQ(one.step_error_pct.min, one.step_error_pct.max);
  EXPECT_THROW(compare_repeated(simulated(), {}), InvalidArgument);
}

// A simulation per run, as compare makes where it measured the machine's speed beside each run: runs on a
// machine twice and half as fast, each against a simulation at that speed, err as the first run does
// against the first simulation, with no range; the simulated figures are the medians of the three.
TEST(CompareRepeated, EachRunAgainstItsOwnSimulation) {
  const RepeatedComparison r =
      compare_repeated({simulated(1), simulated(2), simulated(0.5)}, {measured(1), measured(2), measured(0.5)});
  const Comparison c = compare(simulated(), measured());
  EXPECT_EQ(r.runs, 3);
  EXPECT_NEAR(r.step_error_pct.min, c.step_error_pct, 1e-9);
  EXPECT_NEAR(r.step_error_pct.max, c.step_error_pct, 1e-9);
  EXPECT_NEAR(r.step_simulated_s, 8e-6, 1e-15);
  EXPECT_NEAR(r.step_measured_s.median, 11e-6, 1e-15);
  ASSERT_EQ(r.kinds.size(), c.kinds.size());
  for (std::size_t i = 0; i < c.kinds.size(); ++i) {
    EXPECT_EQ(r.kinds[i].kind, c.kinds[i].kind);
    EXPECT_NEAR(r.kinds[i].simulated_s, c.kinds[i].simulated_s, 1e-15);
    EXPECT_NEAR(r.kinds[i].error_pct.min, c.kinds[i].error_pct, 1e-9);
    EXPECT_NEAR(r.kinds[i].error_pct.max, c.kinds[i].error_pct, 1e-9);
  }
  ASSERT_EQ(r.per_op.size(), c.per_op.size());
  for (std::size_t i = 0; i < c.per_op.size(); ++i) {
    EXPECT_NEAR(r.per_op[i].median_abs_error_pct.min, c.per_op[i].median_abs_error_pct, 1e-9);
    EXPECT_NEAR(r.per_op[i].median_abs_error_pct.max, c.per_op[i].median_abs_error_pct, 1e-9);
  }
  // One simulation of the first speed for all three reads the slower and faster runs as errors.
  EXPECT_NEAR(compare_repeated(simulated(), {measured(1), measured(2), measured(0.5)}).step_error_pct.min, error_pct(8, 22), 1e-9);
  EXPECT_THROW(compare_repeated({simulated(), simulated()}, {measured()}), InvalidArgument);
}

// Ratios with / without a technique, worked out by hand: measured pairs 12/10, 15/10, 11/10 → median
// 1.2 [1.1, 1.5]; simulated 9/6 = 1.5, +25% against 1.2. Memory 300/200 measured, 100/50 simulated.
TEST(TechniqueEffect, PairedRatiosAgainstTheSimulatedRatio) {
  auto r = [](double step_s, Bytes peak) {
    Report x;
    x.step_time = Time::us(step_s * 1e6);
    x.peak_memory = peak;
    return x;
  };
  const TechniqueEffect e = technique_effect(r(6, 50), r(9, 100), {r(10, 200), r(10, 200), r(10, 200)},
                                             {r(12, 300), r(15, 300), r(11, 300)});
  EXPECT_NEAR(e.step.measured.median, 1.2, 1e-12);
  EXPECT_NEAR(e.step.measured.min, 1.1, 1e-12);
  EXPECT_NEAR(e.step.measured.max, 1.5, 1e-12);
  EXPECT_NEAR(e.step.simulated, 1.5, 1e-12);
  EXPECT_NEAR(e.step.error_pct, 25.0, 1e-9);
  EXPECT_NEAR(e.peak_memory.measured.median, 1.5, 1e-12);
  EXPECT_NEAR(e.peak_memory.simulated, 2.0, 1e-12);
  EXPECT_NEAR(e.peak_memory.error_pct, 100.0 * (2.0 - 1.5) / 1.5, 1e-9);
  EXPECT_TRUE(std::isnan(e.resident_memory.measured.median));  // no run measured a resident peak
  EXPECT_THROW(technique_effect(r(6, 0), r(9, 0), {r(10, 0)}, {}), InvalidArgument);
  EXPECT_THROW(technique_effect(r(6, 0), r(0, 0), {r(10, 0)}, {r(12, 0)}), InvalidArgument);
}

// The resident peaks (what the system measured) give their own ratio, against the plan's simulated one;
// one run without them leaves it unmeasured rather than a ratio of fewer pairs.
TEST(TechniqueEffect, ResidentPeaksAreCheckedAgainstTheSimulatedMemoryRatio) {
  auto r = [](Bytes peak, Bytes resident) {
    Report x;
    x.step_time = Time::us(1);
    x.peak_memory = peak;
    x.resident_measured = resident > 0;
    x.resident_peak = resident;
    return x;
  };
  const TechniqueEffect e = technique_effect(r(100, 0), r(50, 0), {r(100, 110), r(100, 100)}, {r(50, 66), r(50, 60)});
  EXPECT_NEAR(e.resident_memory.measured.min, 0.6, 1e-12);
  EXPECT_NEAR(e.resident_memory.measured.max, 0.6, 1e-12);
  EXPECT_NEAR(e.resident_memory.simulated, 0.5, 1e-12);
  EXPECT_NEAR(e.resident_memory.error_pct, 100.0 * (0.5 - 0.6) / 0.6, 1e-9);
  EXPECT_NEAR(e.peak_memory.measured.median, 0.5, 1e-12);
  const TechniqueEffect partly = technique_effect(r(100, 0), r(50, 0), {r(100, 110), r(100, 100)}, {r(50, 66), r(50, 0)});
  EXPECT_TRUE(std::isnan(partly.resident_memory.measured.median));
}

TEST(Compare, ReportsOfDifferentWorldSizesAreRefused) {
  Report other = measured();
  other.world_size = 3;
  EXPECT_THROW(compare(simulated(), other), InvalidArgument);
}

}  // namespace
}  // namespace twinbed
