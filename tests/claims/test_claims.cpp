#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "twinbed/claims/claim.hpp"
#include "twinbed/claims/ledger.hpp"
#include "twinbed/claims/metrics.hpp"
#include "twinbed/claims/runs.hpp"
#include "twinbed/core/device.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/export.hpp"
#include "twinbed/sim/compute_model.hpp"

using namespace twinbed;
using namespace twinbed::claims;
using nlohmann::json;

namespace {

const std::string kData = std::string(TWINBED_TEST_DATA_DIR) + "/claims";

Figure figure(const json& reported, const json& tolerance = json()) {
  json f = {{"what", "x"}, {"reported", reported}, {"metric", {{"name", "ratio"}}}};
  if (!tolerance.is_null()) f["tolerance"] = tolerance;
  json c = {{"id", "T"}, {"seed", "s"}, {"technique", "t"}, {"claim", "c"}, {"figures", {f}}};
  return claim_from_json(c, "T.json").figures[0];
}

std::string error_path(const json& c) {
  try {
    claim_from_json(c, "T.json");
  } catch (const ConfigError& e) {
    return e.path();
  }
  return "no error";
}

}  // namespace

TEST(Judge, ValuesRangesAndBounds) {
  const Figure v = figure({{"value", 10}}, {{"rel", 0.1}});
  EXPECT_EQ(judge(v, 10.9).verdict, Verdict::Reproduced);
  EXPECT_EQ(judge(v, 9.0).verdict, Verdict::Reproduced);
  EXPECT_EQ(judge(v, 11.2).verdict, Verdict::NotReproduced);
  EXPECT_EQ(judge(v, 8.8).verdict, Verdict::NotReproduced);
  const Figure a = figure({{"value", 60}}, {{"abs", 2}});
  EXPECT_EQ(judge(a, 61.9).verdict, Verdict::Reproduced);
  EXPECT_EQ(judge(a, 62.1).verdict, Verdict::NotReproduced);
  const Figure range = figure({{"min", 60}, {"max", 75}}, {{"abs", 2}});
  EXPECT_EQ(judge(range, 58.5).verdict, Verdict::Reproduced);
  EXPECT_EQ(judge(range, 70).verdict, Verdict::Reproduced);
  EXPECT_EQ(judge(range, 77.5).verdict, Verdict::NotReproduced);
  const Figure at_most = figure({{"max", 5}}, {{"rel", 0}});
  EXPECT_EQ(judge(at_most, 5).verdict, Verdict::Reproduced);
  EXPECT_EQ(judge(at_most, 0).verdict, Verdict::Reproduced);
  EXPECT_EQ(judge(at_most, 5.01).verdict, Verdict::NotReproduced);
  const Figure at_least = figure({{"min", 92}}, {{"abs", 1}});
  EXPECT_EQ(judge(at_least, 91.5).verdict, Verdict::Reproduced);
  EXPECT_EQ(judge(at_least, 90).verdict, Verdict::NotReproduced);
}

TEST(Judge, ReasonsStateBothFiguresAndWhy) {
  const Figure v = figure({{"value", 0.3}, {"baseline", 12.7}, {"unit", "s"}}, {{"rel", 0.25}});
  const Judgement j = judge(v, 3.0, "what drives it");
  EXPECT_EQ(j.verdict, Verdict::NotReproduced);
  EXPECT_NE(j.reason.find("simulated 3 s, reported 12.7 → 0.3 s (10× above)"), std::string::npos) << j.reason;
  EXPECT_NE(j.reason.find("what drives it"), std::string::npos) << j.reason;
  EXPECT_EQ(judge(v, std::nullopt).verdict, Verdict::NotReproducibleHere);
  EXPECT_EQ(judge(v, std::nan("")).verdict, Verdict::NotReproducibleHere);
  // A negative figure against a positive one: the difference, not a ratio.
  const Judgement neg = judge(figure({{"value", 42}, {"unit", "%"}}, {{"abs", 5}}), -24.4);
  EXPECT_NE(neg.reason.find("(66.4 % below)"), std::string::npos) << neg.reason;
}

TEST(ClaimFile, StrictParsing) {
  const json ok = {{"id", "T"}, {"seed", "s"}, {"technique", "t"}, {"claim", "c"},
                   {"figures", {{{"what", "x"}, {"reported", {{"value", 1}}}, {"not_reproducible", "why"}}}}};
  EXPECT_EQ(error_path(ok), "no error");
  json c = ok;
  c["figure"] = 1;
  EXPECT_EQ(error_path(c), "/figure");
  c = ok;
  c["figures"][0]["metric"] = {{"name", "ratio"}};  // both metric and not_reproducible
  EXPECT_EQ(error_path(c), "/figures/0");
  c = ok;
  c["figures"][0]["reported"] = {{"value", 1}, {"min", 0}};
  EXPECT_EQ(error_path(c), "/figures/0/reported");
  c = ok;
  c["figures"][0]["tolerance"] = {{"rel", 0.1}, {"abs", 1}};
  EXPECT_EQ(error_path(c), "/figures/0/tolerance");
  c = ok;
  c["figures"] = json::array();
  EXPECT_EQ(error_path(c), "/figures");
  EXPECT_THROW(load_claim(kData + "/../experiments/unknown_key.json"), ConfigError);  // not a claim file
}

TEST(Ledger, SyntheticClaimsInsideAndOutsideTheTolerance) {
  const auto results = run_ledger(claim_files(kData, {"SYNTH-RATIO"}));
  ASSERT_EQ(results.size(), 1u);
  const auto& f = results[0].figures;
  ASSERT_EQ(f.size(), 3u);
  EXPECT_EQ(f[0].judgement.verdict, Verdict::Reproduced);
  EXPECT_EQ(f[1].judgement.verdict, Verdict::NotReproduced);
  EXPECT_EQ(f[2].judgement.verdict, Verdict::NotReproducibleHere);
  EXPECT_DOUBLE_EQ(*f[0].simulated, 1.5);
  EXPECT_DOUBLE_EQ(*f[2].arithmetic, 0.25);
  // The check is in its own metric's unit (a plain ratio: none), not in the reported figure's (%).
  EXPECT_EQ(f[2].arithmetic_unit, "");
  EXPECT_NE(f[2].judgement.reason.find("arithmetic check: 0.25"), std::string::npos) << f[2].judgement.reason;
  EXPECT_EQ(f[2].judgement.reason.find("0.25 %"), std::string::npos) << f[2].judgement.reason;
  EXPECT_FALSE(f[0].measured);  // no real backend yet
}

TEST(Ledger, RunsDerivationsAndSharedSimulations) {
  const auto results = run_ledger(claim_files(kData, {"SYNTH-RUNS", "SYNTH-SHARED"}));
  ASSERT_EQ(results.size(), 2u);
  const auto& f = results[0].figures;
  EXPECT_EQ(f[0].judgement.verdict, Verdict::Reproduced) << f[0].judgement.reason;  // LoRA is faster, with no tolerance:
  EXPECT_GT(*f[0].simulated, 1.0);                                                  // a speedup above 1
  EXPECT_NEAR(*f[1].simulated, 50, 0.5);                                           // the derived size takes 50 ms
  // ring_32 keeps ring's derived size (not one derived again for 32 ranks), so it does not take 50 ms.
  EXPECT_EQ(f[2].judgement.verdict, Verdict::NotReproduced) << f[2].judgement.reason;
  EXPECT_GT(std::abs(*f[2].simulated - 50), 0.5);
  Runs runs;
  const Claim synth = load_claim(kData + "/SYNTH-RUNS.json");
  EXPECT_EQ(runs.get(synth, "ring_32").gradient_bytes, runs.get(synth, "ring").gradient_bytes);
  EXPECT_NEAR(*f[3].simulated, 100 * (1 - (0.5 + 4.0 / 256) / 2), 0.01);             // 4 bits + scales of 16-bit
  ASSERT_EQ(results[0].derivations.size(), 1u);
  EXPECT_NE(results[0].derivations[0].find("derived: a plain ring all-reduce"), std::string::npos);

  // The outputs hold every figure.
  EXPECT_NE(ledger_table(results).find("SYNTH-SHARED"), std::string::npos);
  EXPECT_EQ(ledger_json(results)["claims"][0]["figures"].size(), 4u);
  EXPECT_NE(ledger_csv(results).find("SYNTH-RUNS,"), std::string::npos);
  EXPECT_NE(ledger_markdown(results).find("## SYNTH-RUNS"), std::string::npos);
}

TEST(Ledger, CsvFieldsReadBackAsWritten) {
  ClaimResult c;
  c.claim.id = "X";
  c.claim.technique = "a, \"quoted\"\r\nnext";
  FigureResult f;
  f.what = "carriage\rreturn";  // a lone CR ends a line for some readers: it must be quoted too
  f.reported.value = 1;
  f.judgement.reason = "one, two";
  c.figures = {f};
  const auto rows = parse_csv(ledger_csv({c}));
  ASSERT_EQ(rows.size(), 2u);
  ASSERT_EQ(rows[1].size(), rows[0].size());
  EXPECT_EQ(rows[1][1], c.claim.technique);
  EXPECT_EQ(rows[1][2], f.what);
  EXPECT_EQ(rows[1][8], f.judgement.reason);
}

// Every error of a claim names its file exactly once, whatever the message itself says.
TEST(Ledger, ErrorsNameTheClaimFileOnce) {
  const std::filesystem::path dir = std::filesystem::path(testing::TempDir()) / "twinbed-claims-errors";
  std::filesystem::create_directories(dir);
  const std::string file = (dir / "T.json").string();
  const auto error_of = [&](const json& figure, const json& runs) -> std::string {
    json c = {{"id", "T"}, {"seed", "s"}, {"technique", "t"}, {"claim", "c"}, {"runs", runs}, {"figures", {figure}}};
    std::ofstream(file) << c.dump();
    try {
      run_ledger({file});
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  const auto times_named = [&](const std::string& message) {
    int n = 0;
    for (std::size_t at = message.find("(in " + file + ")"); at != std::string::npos; at = message.find("(in " + file + ")", at + 1)) ++n;
    return n;
  };
  const json runs = {{"base", load_claim(kData + "/SYNTH-RUNS.json").runs["base"]}, {"bad", {{"from", "nosuch"}}}};
  const json speedup = {{"what", "x"}, {"reported", {{"value", 1}}}, {"metric", {{"name", "step_speedup"}, {"baseline", "base"}, {"treatment", "bad"}}}};
  // A message that says "(in " itself used to stop the file from being added.
  const std::string disguised = error_of({{"what", "x"}, {"reported", {{"value", 1}}}, {"metric", {{"name", "no (in disguise)"}}}}, json::object());
  EXPECT_NE(disguised.find("/figures/0/metric/name"), std::string::npos) << disguised;
  EXPECT_EQ(times_named(disguised), 1) << disguised;
  const std::string bad_run = error_of(speedup, runs);
  EXPECT_NE(bad_run.find("/runs/nosuch"), std::string::npos) << bad_run;
  EXPECT_EQ(times_named(bad_run), 1) << bad_run;
  const std::string bad_key = error_of({{"what", "x"}, {"reported", {{"value", 1}}}, {"not_reproducible", "n"}, {"typo", 1}}, runs);
  EXPECT_EQ(times_named(bad_key), 1) << bad_key;
  std::filesystem::remove_all(dir);
}

TEST(Runs, AnIdenticalRunIsSimulatedOnce) {
  Runs runs;
  const Claim a = load_claim(kData + "/SYNTH-RUNS.json");
  const Claim b = load_claim(kData + "/SYNTH-SHARED.json");
  const RunResult& x = runs.get(a, "base");
  const int after_first = runs.simulations();
  const RunResult& y = runs.get(b, "same");
  EXPECT_EQ(&x, &y);
  EXPECT_EQ(runs.simulations(), after_first);
  EXPECT_THROW(runs.get(a, "nosuch"), ConfigError);
}

TEST(Runs, ADerivedSizeIsPartOfTheCacheKey) {
  Claim claim = load_claim(kData + "/SYNTH-RUNS.json");
  // The same fields as ring_32 (ring with 32 ranks), but its size derived on 32 ranks, not on ring's 16.
  json direct = claim.runs["ring"];
  direct["reduction"]["cluster"]["ranks"] = 32;
  claim.runs["direct_32"] = direct;
  Runs runs;
  const RunResult& ring = runs.get(claim, "ring");
  const RunResult& kept = runs.get(claim, "ring_32");
  const RunResult& derived = runs.get(claim, "direct_32");
  EXPECT_NE(&kept, &derived);
  EXPECT_EQ(kept.gradient_bytes, ring.gradient_bytes);
  EXPECT_NE(derived.gradient_bytes, ring.gradient_bytes);
  EXPECT_NEAR(derived.report.step_time.seconds(), 0.05, 0.01 * 0.05);  // its own derivation: 50 ms on 32 ranks
  EXPECT_GT(std::abs(kept.report.step_time.seconds() - 0.05), 0.01 * 0.05);
}

TEST(Runs, SetPointersMustPointIntoTheConfig) {
  Claim claim = load_claim(kData + "/SYNTH-RUNS.json");
  const auto message = [&](const std::string& pointer) -> std::string {
    claim.runs["bad"] = {{"from", "base"}, {"set", {{pointer, 1}}}};
    try {
      Runs().get(claim, "bad");
    } catch (const ConfigError& e) {
      return e.message();
    }
    return "no error";
  };
  // A step below a number used to escape as the JSON library's own exception.
  EXPECT_NE(message("/layout/tp/x").find("does not point into the config"), std::string::npos);
  EXPECT_NE(message("layout/tp").find("must start with '/'"), std::string::npos);
  EXPECT_NE(message("").find("not the whole config"), std::string::npos);
  EXPECT_EQ(message("/layout/pp"), "no error");
}

TEST(Metrics, UnknownNamesAndBadArgumentsNameThePath) {
  Runs runs;
  const Claim c = load_claim(kData + "/SYNTH-RATIO.json");
  try {
    evaluate({{"name", "nosuch"}}, "/figures/0/metric", c, runs);
    ADD_FAILURE();
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.path(), "/figures/0/metric/name");
    EXPECT_NE(std::string(e.what()).find("step_speedup"), std::string::npos);
  }
  try {
    evaluate({{"name", "ratio"}, {"numerator", 1}, {"denominator", 0}}, "/m", c, runs);
    ADD_FAILURE();
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.path(), "/m/denominator");
  }
  EXPECT_THROW(evaluate({{"name", "ratio"}, {"numerator", 1}, {"denominator", 2}, {"extra", 1}}, "/m", c, runs), ConfigError);
}

// Bus volume per rank, with nccl-tests' factors: an all-reduce 2(n−1)/n of its buffer, an all-gather
// (n−1)/n of the gathered array, a broadcast or reduce the whole buffer (the root sends, or receives, it).
TEST(Metrics, CollectiveBusBytesUseNcclTestsFactors) {
  Plan plan;
  plan.groups.resize(kGroupKinds);
  plan.groups[static_cast<std::size_t>(GroupKind::Dp)].members = {{0, 1, 2, 3}};
  plan.program_of_rank = {0, 0, 0, 0};
  const auto collective = [](CollectiveOp op, TensorClass what, Bytes bytes) {
    PlanOp o = collective_op(op, GroupKind::Dp, bytes, StreamKind::Collective);
    o.tensor_class = what;
    return o;
  };
  plan.programs.resize(1);
  plan.programs[0].ops = {collective(CollectiveOp::AllReduce, TensorClass::Grads, 1000),
                          collective(CollectiveOp::Reduce, TensorClass::Grads, 100),
                          collective(CollectiveOp::Broadcast, TensorClass::Weights, 10),
                          collective(CollectiveOp::AllGather, TensorClass::Weights, 4000)};
  EXPECT_DOUBLE_EQ(collective_bus_bytes(plan, true), 1500 + 100);
  EXPECT_DOUBLE_EQ(collective_bus_bytes(plan, false), 1500 + 100 + 10 + 3000);
}

// The head-gating arithmetic: with every head gated off, the parameters removed are the attention's
// (QKV 3h²+3h, projection h²) but the projection bias h, in every layer.
TEST(Metrics, HeadGatingRemovesTheHeadsParameters) {
  Runs runs;
  const Claim c = load_claim(kData + "/SYNTH-RATIO.json");
  const json model = {{"layers", 4}, {"hidden", 512}, {"heads", 8}, {"seq_len", 256}, {"vocab", 8192}};
  const MetricValue v = evaluate({{"name", "head_gating_parameter_reduction_pct"}, {"model", model}, {"active_fraction", 0}}, "/m", c, runs);
  const double h = 512;
  const double total = static_cast<double>(parameter_count(model_from_json(model, "")).total());
  EXPECT_DOUBLE_EQ(*v.value, 100 * 4 * (4 * h * h + 3 * h) / total);
}

// An absolute tolerance of 0 is an exact match, and the reason says it in the figure's unit.
TEST(Judge, AnAbsoluteToleranceOfZeroIsExact) {
  const Figure f = figure({{"value", 5}, {"unit", "ms"}}, {{"abs", 0}});
  const Judgement same = judge(f, 5.0);
  EXPECT_EQ(same.verdict, Verdict::Reproduced);
  EXPECT_NE(same.reason.find("within the tolerance (±0 ms)"), std::string::npos) << same.reason;
  EXPECT_EQ(judge(f, 5.001).verdict, Verdict::NotReproduced);
  EXPECT_EQ(error_path({{"id", "T"}, {"seed", "s"}, {"technique", "t"}, {"claim", "c"},
                        {"figures", {{{"what", "x"}, {"reported", {{"value", 1}}}, {"metric", {{"name", "ratio"}}}, {"tolerance", {{"abs", -1}}}}}}}),
            "/figures/0/tolerance");
}

// A judged figure is reported in its metric's unit; a check states its own.
TEST(Ledger, UnitsComeFromTheMetric) {
  const std::filesystem::path dir = std::filesystem::path(testing::TempDir()) / "twinbed-claims-units";
  std::filesystem::create_directories(dir);
  const std::string file = (dir / "U.json").string();
  const auto write = [&](const json& figure) {
    std::ofstream(file) << json({{"id", "U"}, {"seed", "s"}, {"technique", "t"}, {"claim", "c"}, {"figures", {figure}}}).dump();
  };
  const json moe = {{"name", "moe_active_parameter_ratio"}, {"model", {{"preset", "gpt3-1.3b"}}}, {"experts", 8}, {"top_k", 1}};
  write({{"what", "x"}, {"reported", {{"value", 41}, {"unit", "%"}}}, {"metric", moe}});
  try {
    run_ledger({file});
    ADD_FAILURE() << "a ratio in × judged against a figure in %";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.path(), "/figures/0/reported/unit");
    EXPECT_NE(e.message().find("gives '×'"), std::string::npos) << e.message();
  }
  write({{"what", "x"}, {"reported", {{"value", 41}, {"unit", "%"}}}, {"not_reproducible", "n"}, {"arithmetic", moe}});
  const auto results = run_ledger({file});
  const FigureResult& f = results[0].figures[0];
  EXPECT_EQ(f.arithmetic_unit, "×");
  EXPECT_NE(f.judgement.reason.find("arithmetic check: 1 ×"), std::string::npos) << f.judgement.reason;  // MOE-8 said "1 %"
  EXPECT_EQ(ledger_json(results)["claims"][0]["figures"][0]["arithmetic_unit"], "×");
  std::filesystem::remove_all(dir);
}

// Device figures come from core's presets and the simulator's compute model, so a claim cannot drift
// from them.
TEST(Metrics, DeviceFiguresComeFromThePresetsAndTheComputeModel) {
  Runs runs;
  const Claim c = load_claim(kData + "/SYNTH-RATIO.json");
  const DeviceSpec a100 = device_preset("a100");
  const MetricValue peaks = evaluate({{"name", "device_peak_ratio"}, {"device", "a100"}, {"dtype", "bf16"}, {"baseline_dtype", "tf32"}}, "/m", c, runs);
  EXPECT_DOUBLE_EQ(*peaks.value, a100.peak_bf16 / a100.peak_tf32);
  EXPECT_EQ(peaks.unit, "×");
  const MetricValue gemm = evaluate({{"name", "gemm_efficiency_pct"}, {"device", "h100"}, {"dtype", "bf16"}}, "/m", c, runs);
  EXPECT_DOUBLE_EQ(*gemm.value, 100 * sim::default_efficiency("h100").gemm);
  EXPECT_EQ(gemm.unit, "%");
  const auto path_of = [&](const json& m) -> std::string {
    try {
      evaluate(m, "/m", c, runs);
    } catch (const ConfigError& e) {
      return e.path();
    }
    return "no error";
  };
  EXPECT_EQ(path_of({{"name", "gemm_efficiency_pct"}, {"device", "v100"}, {"dtype", "bf16"}}), "/m/device");
  EXPECT_EQ(path_of({{"name", "gemm_efficiency_pct"}, {"device", "a100"}, {"dtype", "fp8"}}), "/m/dtype");  // Ampere has no FP8
}

// The exponent of t ∝ xᵉ is the least-squares slope of log t on log x over every run given.
TEST(Metrics, TimeExponentFitsEveryRun) {
  Claim claim = load_claim(kData + "/SYNTH-RUNS.json");
  claim.runs["ring_64"] = {{"from", "ring"}, {"set", {{"/cluster/ranks", 64}}}};
  Runs runs;
  const auto log_t = [&](const char* run) { return std::log(runs.get(claim, run).report.step_time.seconds()); };
  const double t16 = log_t("ring"), t32 = log_t("ring_32"), t64 = log_t("ring_64");
  const auto exponent = [&](const json& names, const json& xs) {
    return *evaluate({{"name", "time_exponent"}, {"runs", names}, {"x", xs}}, "/m", claim, runs).value;
  };
  EXPECT_NEAR(exponent({"ring", "ring_32"}, {16, 32}), (t32 - t16) / std::log(2), 1e-12);
  // Equally spaced in log x: the slope is that of the outer two points.
  const double fitted = exponent({"ring", "ring_32", "ring_64"}, {16, 32, 64});
  EXPECT_NEAR(fitted, (t64 - t16) / std::log(4), 1e-12);
  EXPECT_NE(fitted, (t32 - t16) / std::log(2));  // not the first step's alone
  const MetricValue v = evaluate({{"name", "time_exponent"}, {"runs", {"ring", "ring_32", "ring_64"}}, {"x", {16, 32, 64}}}, "/m", claim, runs);
  EXPECT_NE(v.why.find("exponent between neighbours: 16→32 "), std::string::npos) << v.why;
  try {
    exponent({"ring", "ring_32"}, {32, 16});
    ADD_FAILURE();
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.path(), "/m/x/1");
  }
  EXPECT_THROW(exponent({"ring"}, {16}), ConfigError);
  EXPECT_THROW(exponent({"ring", "ring_32"}, {16}), ConfigError);
}
