#include <gtest/gtest.h>

#include <cmath>

#include "support/layouts.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/passes.hpp"
#include "twinbed/core/passes/dsa.hpp"
#include "twinbed/core/passes/precision.hpp"

using namespace twinbed;
using twinbed::test_support::layout3d;

namespace {

using Sparsity = OpCost::Sparsity;
using Phase = OpCost::Phase;

Plan small_plan(int zero = 0) {
  Layout l = layout3d(2, 2, 2, 4);
  l.zero_stage = zero;
  return build_plan(gpt_model("tiny", 4, 256, 8, 128, 1024), l, {8, 8});
}

DsaParams dsa(double density, DsaParams::Granularity g = DsaParams::Granularity::Unstructured,
              DsaParams::Mode mode = DsaParams::Mode::Freeze) {
  DsaParams p;
  p.density = density;
  p.granularity = g;
  p.mode = mode;
  if (g == DsaParams::Granularity::NM) p.density = 0.5;
  return p;
}

// Per program: matmul FLOPs of the layer-matrix GEMMs by phase.
struct Flops {
  double fwd = 0, dgrad = 0, wgrad = 0, other = 0;
};
Flops gemm_flops(const Plan& plan, const Program& p) {
  Flops f;
  for (const PlanOp& op : p.ops) {
    if (op.kind != OpKind::Compute) continue;
    const OpCost& c = plan.costs[static_cast<std::size_t>(op.cost)];
    if (!c.is_matmul()) continue;
    const bool layer_matrix = c.kind == OpCost::Kind::Gemm && op.layer >= 0;
    if (!layer_matrix) f.other += c.flops;
    else if (c.phase == Phase::BackwardWeight) f.wgrad += c.flops;
    else if (c.phase == Phase::BackwardData) f.dgrad += c.flops;
    else f.fwd += c.flops;
  }
  return f;
}

}  // namespace

TEST(DsaPass, DensityOneIsTheIdentity) {
  const Plan base = small_plan();
  Plan plan = base;
  apply_dsa(plan, dsa(1.0));
  EXPECT_EQ(plan, base);
}

TEST(DsaPass, FreezeShrinksOnlyWeightGradientsAndUpdates) {
  const double d = 0.3;
  const Plan base = small_plan();
  Plan plan = base;
  apply_dsa(plan, dsa(d));
  EXPECT_NO_THROW(validate(plan));
  for (std::size_t pi = 0; pi < plan.programs.size(); ++pi) {
    const Flops before = gemm_flops(base, base.programs[pi]), after = gemm_flops(plan, plan.programs[pi]);
    EXPECT_NEAR(after.wgrad, d * before.wgrad, 1e-6 * before.wgrad);
    EXPECT_EQ(after.fwd, before.fwd);
    EXPECT_EQ(after.dgrad, before.dgrad);
    EXPECT_EQ(after.other, before.other);
    int refreshes = 0, masks = 0;
    for (const PlanOp& op : plan.programs[pi].ops) {
      if (op.kind == OpKind::Alloc && op.tensor_class == TensorClass::TechniqueState) ++masks;
      if (op.kind != OpKind::Compute) continue;
      const OpCost& c = plan.costs[static_cast<std::size_t>(op.cost)];
      if (c.kernel == OpCost::Kernel::MaskRefresh) {
        ++refreshes;
        // gradient (2 B) + 17 B per target parameter, every 100 iterations.
        EXPECT_EQ(c.bytes, std::llround(static_cast<double>(c.elements) * 19 / 100));
      }
      if (c.phase == Phase::BackwardWeight && c.kind == OpCost::Kind::Gemm && op.layer >= 0) {
        EXPECT_EQ(c.sparsity, Sparsity::Unstructured);
        EXPECT_EQ(c.density, d);
      }
    }
    EXPECT_EQ(refreshes, 1);
    EXPECT_EQ(masks, 1);
  }
  // Only the masked part of the weight-gradient work goes: at most a third of the layers' matmul FLOPs.
  EXPECT_LT(plan.executed_flops(), base.executed_flops());
  EXPECT_GT(plan.executed_flops(), base.executed_flops() * (1 - (1 - d) / 3) * 0.999);
}

TEST(DsaPass, MaskedStepTouchesTheActiveState) {
  const Plan base = small_plan(1);
  Plan plan = base;
  apply_dsa(plan, dsa(0.25));
  const Program& p = plan.programs[0];
  std::int64_t targets = 0, others = 0;
  for (const ParamTensor& t : p.params) (t.kind == ParamKind::Qkv || t.kind == ParamKind::Proj || t.kind == ParamKind::Fc1 || t.kind == ParamKind::Fc2 ? targets : others) += t.elements;
  for (const PlanOp& op : p.ops) {
    if (op.span != SpanKind::Optimizer) continue;
    const OpCost& c = plan.costs[static_cast<std::size_t>(op.cost)];
    EXPECT_EQ(c.kernel, OpCost::Kernel::MaskedStep);
    // ZeRO-1 over dp 2: each group is sharded in half; 28 B per updated parameter plus the 1-byte mask.
    const std::int64_t updated = (others + 1) / 2 + (std::llround(0.25 * static_cast<double>(targets)) + 1) / 2;
    EXPECT_NEAR(static_cast<double>(c.bytes), 28.0 * static_cast<double>(updated) + static_cast<double>((targets + 1) / 2), 28.0 * 8);
  }
}

// The precision pass (listed before dsa) may give the targets other dtypes than the model's: the refresh
// reads each gradient in its own tensor's dtype.
TEST(DsaPass, MaskRefreshReadsEachGradientInItsTensorsDtype) {
  Plan plan = small_plan(1);  // bf16; ZeRO-1 over dp 2
  PrecisionOverride fp32_layer0;
  fp32_layer0.ops = PrecisionOps::Gemm;
  fp32_layer0.first_layer = fp32_layer0.last_layer = 0;
  fp32_layer0.dtype = DType::FP32;
  PrecisionParams precision;
  precision.overrides = {fp32_layer0};
  apply_precision(plan, precision);
  apply_dsa(plan, dsa(0.3));
  ASSERT_EQ(plan.programs[0].params[0].dtype, DType::FP32);  // layer 0's qkv, on stage 0
  for (const Program& p : plan.programs) {
    std::int64_t fp32 = 0, bf16 = 0;  // target elements of each dtype
    for (const ParamTensor& t : p.params) {
      if (t.kind == ParamKind::Qkv || t.kind == ParamKind::Proj || t.kind == ParamKind::Fc1 || t.kind == ParamKind::Fc2) {
        (t.dtype == DType::FP32 ? fp32 : bf16) += t.elements;
      }
    }
    // Each dtype's elements sharded over dp 2, gradient bytes (4 or 2) + 17 per parameter, every 100
    // iterations.
    const double read = static_cast<double>((fp32 + 1) / 2) * (4 + 17) + static_cast<double>((bf16 + 1) / 2) * (2 + 17);
    int refreshes = 0;
    for (const PlanOp& op : p.ops) {
      if (op.kind != OpKind::Compute) continue;
      const OpCost& c = plan.costs[static_cast<std::size_t>(op.cost)];
      if (c.kernel != OpCost::Kernel::MaskRefresh) continue;
      ++refreshes;
      EXPECT_EQ(c.bytes, std::llround(read / 100));
    }
    EXPECT_EQ(refreshes, 1);
  }
}

TEST(DsaPass, PruneModeAndGranularities) {
  struct Case {
    DsaParams::Granularity g;
    Sparsity fwd, dgrad, wgrad;
  };
  const Case cases[] = {
      {DsaParams::Granularity::Unstructured, Sparsity::Unstructured, Sparsity::Unstructured, Sparsity::Unstructured},
      {DsaParams::Granularity::Block, Sparsity::Block, Sparsity::Block, Sparsity::Block},
      {DsaParams::Granularity::NM, Sparsity::TwoFour, Sparsity::Unstructured, Sparsity::Unstructured},
  };
  for (const Case& c : cases) {
    const Plan base = small_plan();
    Plan plan = base;
    apply_dsa(plan, dsa(0.5, c.g, DsaParams::Mode::Prune));
    EXPECT_NO_THROW(validate(plan));
    const Flops before = gemm_flops(base, base.programs[1]), after = gemm_flops(plan, plan.programs[1]);
    EXPECT_NEAR(after.fwd, 0.5 * before.fwd, 1e-9 * before.fwd);
    EXPECT_NEAR(after.dgrad, 0.5 * before.dgrad, 1e-9 * before.dgrad);
    EXPECT_NEAR(after.wgrad, 0.5 * before.wgrad, 1e-9 * before.wgrad);
    for (const PlanOp& op : plan.programs[1].ops) {
      if (op.kind != OpKind::Compute || op.layer < 0) continue;
      const OpCost& cost = plan.costs[static_cast<std::size_t>(op.cost)];
      if (cost.kind != OpCost::Kind::Gemm) continue;
      const Sparsity want = cost.phase == Phase::BackwardWeight ? c.wgrad : cost.phase == Phase::BackwardData ? c.dgrad : c.fwd;
      EXPECT_EQ(cost.sparsity, want) << cost.name;
    }
  }
}

TEST(DsaPass, TargetsAndParameterErrors) {
  DsaParams only_fc = dsa(0.5);
  only_fc.targets = {ParamKind::Fc1, ParamKind::Fc2};
  Plan plan = small_plan();
  apply_dsa(plan, only_fc);
  for (const PlanOp& op : plan.programs[0].ops) {
    if (op.kind != OpKind::Compute) continue;
    const OpCost& c = plan.costs[static_cast<std::size_t>(op.cost)];
    if (c.sparsity != Sparsity::Dense && c.kernel == OpCost::Kernel::None) {  // the mask refresh carries the masks' granularity
      EXPECT_EQ(c.name.rfind("fc", 0), 0u) << c.name;
    }
  }
  const auto path_of = [](const nlohmann::json& j) {
    try {
      dsa_params_from_json(j, "/t");
    } catch (const ConfigError& e) {
      return e.path();
    }
    return std::string("no error");
  };
  EXPECT_EQ(path_of({{"pass", "dsa"}}), "/t/density");  // required
  EXPECT_EQ(path_of({{"pass", "dsa"}, {"density", 0}}), "/t/density");
  EXPECT_EQ(path_of({{"pass", "dsa"}, {"density", 0.5}, {"granularity", "nm"}, {"n", 1}}), "/t/density");
  EXPECT_EQ(path_of({{"pass", "dsa"}, {"density", 0.5}, {"block_size", 16}}), "/t/block_size");
  EXPECT_EQ(path_of({{"pass", "dsa"}, {"density", 0.5}, {"mode", "zero"}}), "/t/mode");
  EXPECT_EQ(path_of({{"pass", "dsa"}, {"density", 0.5}, {"targets", {"norms"}}}), "/t/targets/0");
  EXPECT_EQ(path_of({{"pass", "dsa"}, {"density", 0.5}, {"refresh", 5}}), "/t/refresh");
  const DsaParams nm = dsa_params_from_json({{"pass", "dsa"}, {"granularity", "nm"}}, "/t");
  EXPECT_EQ(nm.density, 0.5);
  nlohmann::json back = dsa_params_to_json(nm);
  back["pass"] = "dsa";
  EXPECT_EQ(dsa_params_from_json(back, "/t"), nm);
}
