#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <set>
#include <unordered_map>

#include "support/layouts.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/passes.hpp"
#include "twinbed/core/passes/lora.hpp"
#include "twinbed/core/passes/precision.hpp"

using namespace twinbed;
using twinbed::test_support::layout3d;
using nlohmann::json;

namespace {

TransformerModel tiny(DType dtype = DType::BF16) { return gpt_model("tiny", 4, 256, 8, 128, 1024, dtype); }

Plan build(const Layout& l, const TransformerModel& m = tiny()) { return build_plan(m, l, {l.world_size(), 8}); }

PrecisionParams params(json j) {
  j["pass"] = "precision";
  return precision_params_from_json(j, "/t");
}

Plan with_precision(const Plan& base, const json& j) {
  Plan plan = base;
  apply_precision(plan, params(j));
  return plan;
}

const OpCost& cost_of(const Plan& plan, const PlanOp& op) { return plan.costs[static_cast<std::size_t>(op.cost)]; }
const std::string& name_of(const Plan& plan, const PlanOp& op) { return plan.names[op.name]; }

// The ops of the model's own lists in the model's dtype, by name.
std::unordered_map<std::string, OpCost> model_ops(const TransformerModel& m, const Layout& l) {
  std::unordered_map<std::string, OpCost> out;
  const OpContext c = l.op_context();
  for (const auto& list : {layer_forward_ops(m, c), layer_backward_ops(m, c), layer_recompute_ops(m, c, l.recompute),
                           embedding_forward_ops(m, c), embedding_backward_ops(m, c), head_forward_ops(m, c),
                           head_backward_ops(m, c)}) {
    for (const OpCost& op : list) out.emplace(op.name, op);
  }
  return out;
}

// Indices of the ops of a program named `name`.
std::vector<std::size_t> ops_named(const Plan& plan, const Program& prog, const std::string& name) {
  std::vector<std::size_t> out;
  for (std::size_t i = 0; i < prog.ops.size(); ++i) {
    if (name_of(plan, prog.ops[i]) == name) out.push_back(i);
  }
  return out;
}

std::size_t step_of(const Program& prog) {
  for (std::size_t i = 0; i < prog.ops.size(); ++i) {
    if (prog.ops[i].span == SpanKind::Optimizer) return i;
  }
  return prog.ops.size();
}

// The same dependencies, op by op (the editor may store an op's dependencies in another order).
void expect_same_deps(const Program& a, const Program& b) {
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    const std::set<std::uint32_t> x(a.deps_of(i), a.deps_of(i) + a.num_deps(i)), y(b.deps_of(i), b.deps_of(i) + b.num_deps(i));
    EXPECT_EQ(x, y) << "op " << i;
  }
}

bool depends_on(const Program& prog, std::size_t op, std::size_t dep) {
  for (std::size_t k = 0; k < prog.num_deps(op); ++k) {
    if (prog.deps_of(op)[k] == dep) return true;
  }
  return false;
}

// Two ops of two plans are the same but for table indices (names and costs compared by value) and deps.
void expect_same_op(const Plan& a, const PlanOp& x, const Plan& b, const PlanOp& y) {
  PlanOp xs = x, ys = y;
  EXPECT_EQ(name_of(a, x), name_of(b, y));
  if (x.kind == OpKind::Compute) {
    EXPECT_EQ(cost_of(a, x), cost_of(b, y)) << name_of(a, x);
  }
  xs.name = ys.name = 0;
  xs.cost = ys.cost = -1;
  EXPECT_EQ(xs, ys) << name_of(a, x);
}

std::string error_path(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.path();
  }
  return "(no error)";
}

}  // namespace

TEST(PrecisionPass, NeutralSettingIsTheIdentity) {
  for (DType d : {DType::BF16, DType::FP16, DType::FP32}) {
    for (int zero : {0, 1, 3}) {
      Layout l = layout3d(2, 2, 2, 4);
      l.zero_stage = zero;
      l.recompute = Recompute::Selective;
      const Plan base = build(l, tiny(d));
      EXPECT_EQ(with_precision(base, json::object()), base) << dtype_name(d) << " zero " << zero;
      // The model's own dtype stated, and an override to it, change nothing either.
      const json stated = {{"dtype", dtype_name(d)}, {"overrides", {{{"ops", "gemm"}, {"dtype", dtype_name(d)}}}}};
      EXPECT_EQ(with_precision(base, stated), base);
    }
  }
  Plan lora = build(layout3d(2, 2, 2, 4));
  apply_lora(lora, LoraParams{8, 16, {ParamKind::Qkv, ParamKind::Fc2}});
  EXPECT_EQ(with_precision(lora, json::object()), lora);
}

TEST(PrecisionPass, StaticFp32DoublesEveryElement) {
  const Layout l = layout3d(2, 2, 2, 4);
  const Plan base = build(l);
  const Plan plan = with_precision(base, {{"dtype", "fp32"}});
  EXPECT_NO_THROW(validate(plan));
  const TransformerModel fp32 = tiny(DType::FP32);
  const auto fp32_ops = model_ops(fp32, l);
  ASSERT_EQ(plan.programs.size(), base.programs.size());
  for (std::size_t p = 0; p < plan.programs.size(); ++p) {
    const Program& before = base.programs[p];
    const Program& after = plan.programs[p];
    ASSERT_EQ(after.ops.size(), before.ops.size()) << "fp32 adds no op";
    expect_same_deps(after, before);
    int matmuls = 0, activations = 0, tp = 0, p2p = 0, dp = 0;
    for (std::size_t i = 0; i < after.ops.size(); ++i) {
      const PlanOp& x = before.ops[i];
      const PlanOp& y = after.ops[i];
      EXPECT_EQ(name_of(base, x), name_of(plan, y));
      if (y.kind == OpKind::Compute) {
        const OpCost& c16 = cost_of(base, x);
        const OpCost& c32 = cost_of(plan, y);
        EXPECT_EQ(c32.flops, c16.flops) << c32.name;
        EXPECT_EQ(c32.dtype, DType::FP32) << c32.name;
        if (y.span == SpanKind::Optimizer) {
          EXPECT_EQ(c32, c16) << "the same parameters are updated, still in fp32";
        } else if (c32.is_matmul()) {
          ++matmuls;
          EXPECT_EQ(c32.bytes, 2 * c16.bytes) << c32.name;
        } else {
          EXPECT_EQ(c32, fp32_ops.at(c32.name)) << c32.name;
        }
      } else if (y.kind == OpKind::Alloc && y.tensor_class == TensorClass::Activation && y.layer < 0) {
        // The loss's FP32 softmax (Megatron's loss) is the same in either dtype.
        EXPECT_EQ(x.bytes, rank_loss_activation_bytes(tiny(), l));
        EXPECT_EQ(y.bytes, rank_loss_activation_bytes(fp32, l));
        EXPECT_EQ(y.bytes, x.bytes);
      } else if (y.kind == OpKind::Alloc && y.tensor_class == TensorClass::Activation) {
        ++activations;
        EXPECT_EQ(x.bytes, rank_activation_bytes_per_layer(tiny(), l));
        EXPECT_EQ(y.bytes, rank_activation_bytes_per_layer(fp32, l));
      } else if (y.kind == OpKind::Collective && y.group == GroupKind::Tp) {
        ++tp;
        EXPECT_EQ(y.bytes, 2 * x.bytes) << name_of(plan, y);
      } else if (y.kind == OpKind::Send || y.kind == OpKind::Recv) {
        ++p2p;
        EXPECT_EQ(y.bytes, 2 * x.bytes);
      } else if (y.kind == OpKind::Collective && y.group == GroupKind::Dp) {
        ++dp;
        EXPECT_EQ(y.bytes, 2 * x.bytes) << name_of(plan, y);
      }
    }
    EXPECT_GT(matmuls, 0);
    EXPECT_GT(activations, 0);
    EXPECT_GT(tp, 0);
    EXPECT_GT(p2p, 0);
    EXPECT_GT(dp, 0);
    // Model state: 4 + 4 + 8 bytes per parameter, no master copy.
    for (const ParamTensor& t : after.params) EXPECT_EQ(t.dtype, DType::FP32);
    const std::int64_t psi = rank_parameters(tiny(), 2, 2, 1, static_cast<int>(p)).total();
    EXPECT_EQ(after.ops[0].bytes, 4 * psi);
    EXPECT_EQ(after.ops[1].bytes, 4 * psi);
    EXPECT_EQ(after.ops[2].bytes, 8 * psi);
    EXPECT_EQ(model_state_of(after.params, l), rank_model_state_bytes(fp32, l, static_cast<int>(p)));
    EXPECT_EQ(before.ops[2].bytes, 12 * psi);
  }
}

TEST(PrecisionPass, FollowsTheModelFormulasOnEveryLayout) {
  // Every ZeRO stage, recomputation, sequence parallelism, interleaving and a mixture of experts, both
  // ways: the retyped plan is op for op the plan the builder gives the model in the target dtype.
  auto in = [](TransformerModel m, DType d) {
    m.dtype = d;
    return m;
  };
  TransformerModel moe = tiny();
  moe.experts = 4;
  moe.top_k = 2;
  // Not fp8: a model of that dtype runs Transformer Engine's recipe, whose quantisation passes the pass
  // does not add (precision.hpp; Fp8ModelsKeepBf16ActivationsEitherWay).
  const std::pair<DType, DType> ways[] = {{DType::BF16, DType::FP32}, {DType::FP32, DType::BF16}, {DType::FP16, DType::BF16}};
  for (const auto& [from, to] : ways) {
    for (int zero = 0; zero <= 3; ++zero) {
      for (Recompute rc : {Recompute::None, Recompute::Selective, Recompute::Full}) {
        for (int variant = 0; variant < 3; ++variant) {  // dense, mixture of experts, interleaved
          Layout l = layout3d(2, 2, 2, 4);
          l.zero_stage = zero;
          l.recompute = rc;
          l.sequence_parallel = rc == Recompute::Selective;
          if (variant == 1) l.ep = 2;
          if (variant == 2) {
            l.schedule = PipelineSchedule::Interleaved1F1B;
            l.virtual_stages = 2;
          }
          const TransformerModel m = variant == 1 ? moe : tiny();
          const Plan plan = with_precision(build(l, in(m, from)), {{"dtype", dtype_name(to)}});
          const Plan reference = build(l, in(m, to));
          EXPECT_NO_THROW(validate(plan));
          ASSERT_EQ(plan.programs.size(), reference.programs.size());
          for (std::size_t p = 0; p < plan.programs.size(); ++p) {
            ASSERT_EQ(plan.programs[p].ops.size(), reference.programs[p].ops.size());
            EXPECT_EQ(plan.programs[p].params, reference.programs[p].params);
            for (std::size_t i = 0; i < plan.programs[p].ops.size(); ++i) {
              expect_same_op(plan, plan.programs[p].ops[i], reference, reference.programs[p].ops[i]);
            }
          }
        }
      }
    }
  }
}

TEST(PrecisionPass, Fp16AddsLossScalingBeforeTheStep) {
  for (int zero : {0, 1}) {
    Layout l = layout3d(2, 1, 2, 3);
    l.zero_stage = zero;
    const Plan base = build(l);
    const Plan plan = with_precision(base, {{"dtype", "fp16"}});
    EXPECT_NO_THROW(validate(plan));
    for (std::size_t p = 0; p < plan.programs.size(); ++p) {
      const Program& prog = plan.programs[p];
      const auto found = ops_named(plan, prog, "precision.loss_scale");
      ASSERT_EQ(found.size(), 1u);
      const std::size_t step = step_of(prog);
      EXPECT_EQ(found[0] + 1, step);
      EXPECT_TRUE(depends_on(prog, step, found[0]));
      const OpCost& c = cost_of(plan, prog.ops[found[0]]);
      const std::int64_t psi = rank_parameters(tiny(), 1, 2, 1, static_cast<int>(p)).total();
      const std::int64_t held = zero == 0 ? psi : (psi + 1) / 2;  // the gradients the step reads
      EXPECT_EQ(c.kernel, OpCost::Kernel::LossScale);
      EXPECT_EQ(c.kind, OpCost::Kind::MemoryBound);
      EXPECT_EQ(c.elements, held);
      EXPECT_EQ(c.bytes, 2 * held * 2);
      // It waits for what the step waited for: the gradient reductions.
      const Program& before = base.programs[p];
      for (std::size_t k = 0; k < before.num_deps(step_of(before)); ++k) {
        const PlanOp& dep = before.ops[before.deps_of(step_of(before))[k]];
        if (dep.kind == OpKind::Collective) {
          bool found_dep = false;
          for (std::size_t j = 0; j < prog.num_deps(found[0]); ++j) {
            found_dep = found_dep || name_of(plan, prog.ops[prog.deps_of(found[0])[j]]) == name_of(base, dep);
          }
          EXPECT_TRUE(found_dep) << name_of(base, dep);
        }
      }
    }
    // "none" removes exactly those ops.
    const Plan unscaled = with_precision(base, {{"dtype", "fp16"}, {"loss_scaling", "none"}});
    for (std::size_t p = 0; p < plan.programs.size(); ++p) {
      EXPECT_TRUE(ops_named(unscaled, unscaled.programs[p], "precision.loss_scale").empty());
      EXPECT_EQ(unscaled.programs[p].ops.size() + 1, plan.programs[p].ops.size());
    }
  }
  // bf16 needs no loss scaling; an fp16 model's own ops are not the pass's to scale.
  const Plan bf16 = with_precision(build(layout3d(2, 1, 2, 3), tiny(DType::FP32)), {{"dtype", "bf16"}});
  const Plan fp16 = build(layout3d(2, 1, 2, 3), tiny(DType::FP16));
  for (const Plan* plan : {&bf16, &fp16}) {
    for (const Program& prog : plan->programs) EXPECT_TRUE(ops_named(*plan, prog, "precision.loss_scale").empty());
  }
  // fp16 only for element-wise ops: no fp16 gradient, no loss scaling op.
  const Plan eltwise = with_precision(build(layout3d(2, 1, 2, 3)), {{"overrides", {{{"ops", "memory_bound"}, {"dtype", "fp16"}}}}});
  for (const Program& prog : eltwise.programs) EXPECT_TRUE(ops_named(eltwise, prog, "precision.loss_scale").empty());
}

TEST(PrecisionPass, AttentionOverrideChangesOnlyAttentionMatmuls) {
  const Plan base = build(layout3d(2, 2, 2, 4));
  const Plan plan = with_precision(base, {{"overrides", {{{"ops", "attention"}, {"dtype", "fp32"}}}}});
  EXPECT_NO_THROW(validate(plan));
  int attention = 0;
  for (std::size_t p = 0; p < plan.programs.size(); ++p) {
    const Program& before = base.programs[p];
    const Program& after = plan.programs[p];
    ASSERT_EQ(after.ops.size(), before.ops.size());
    EXPECT_EQ(after.params, before.params);
    expect_same_deps(after, before);
    for (std::size_t i = 0; i < after.ops.size(); ++i) {
      const PlanOp& x = before.ops[i];
      const PlanOp& y = after.ops[i];
      EXPECT_EQ(y.bytes, x.bytes);
      if (y.kind != OpKind::Compute) continue;
      const OpCost& c = cost_of(plan, y);
      if (c.kind == OpCost::Kind::Attention) {
        ++attention;
        EXPECT_EQ(c.dtype, DType::FP32);
        EXPECT_EQ(c.bytes, 2 * cost_of(base, x).bytes);
      } else {
        EXPECT_EQ(c, cost_of(base, x)) << c.name;
      }
    }
  }
  EXPECT_GT(attention, 0);
}

TEST(PrecisionPass, LayerRangeOverrideActsOnThoseLayersOnly) {
  const Plan base = build(layout3d(2, 2, 2, 4));
  const Plan plan = with_precision(base, {{"overrides", {{{"ops", "gemm"}, {"layers", {1, 2}}, {"dtype", "fp32"}}}}});
  EXPECT_NO_THROW(validate(plan));
  auto in_range = [](std::int32_t layer) { return layer >= 1 && layer <= 2; };
  std::set<std::int32_t> fp32_layers;
  for (std::size_t p = 0; p < plan.programs.size(); ++p) {
    const Program& before = base.programs[p];
    const Program& after = plan.programs[p];
    for (const ParamTensor& t : after.params) EXPECT_EQ(t.dtype, in_range(t.layer) ? DType::FP32 : DType::BF16) << t.layer;
    for (std::size_t i = 0; i < after.ops.size(); ++i) {
      const PlanOp& x = before.ops[i];
      const PlanOp& y = after.ops[i];
      if (y.kind == OpKind::Compute && y.span != SpanKind::Optimizer) {
        const OpCost& c = cost_of(plan, y);
        const bool fp32 = c.kind == OpCost::Kind::Gemm && in_range(y.layer);
        EXPECT_EQ(c.dtype, fp32 ? DType::FP32 : DType::BF16) << name_of(plan, y);
        if (fp32) fp32_layers.insert(y.layer);
      } else if (y.kind == OpKind::Collective && y.group == GroupKind::Tp) {
        EXPECT_EQ(y.bytes, in_range(y.layer) ? 2 * x.bytes : x.bytes) << name_of(plan, y);
      } else if (y.kind == OpKind::Send || y.kind == OpKind::Recv) {
        EXPECT_EQ(y.bytes, x.bytes) << "pipeline messages follow layer -1";
      }
    }
  }
  EXPECT_EQ(fp32_layers, (std::set<std::int32_t>{1, 2}));
}

TEST(PrecisionPass, OverridesInOrderLaterOnesWin) {
  const TransformerModel m = tiny();
  const PrecisionParams p = params({{"dtype", "fp32"},
                                    {"overrides", {{{"ops", "all"}, {"dtype", "fp16"}},
                                                   {{"ops", "attention"}, {"layers", {0, 1}}, {"dtype", "bf16"}}}}});
  EXPECT_EQ(precision_target(p, m, 0, OpCost::Kind::Attention), DType::BF16);
  EXPECT_EQ(precision_target(p, m, 2, OpCost::Kind::Attention), DType::FP16);
  EXPECT_EQ(precision_target(p, m, 1, OpCost::Kind::Gemm), DType::FP16);
  EXPECT_EQ(precision_target(p, m, -1, OpCost::Kind::MemoryBound), DType::FP16);
  // Layer -1 takes only overrides without "layers".
  const PrecisionParams ranged = params({{"overrides", {{{"ops", "all"}, {"layers", {0, 3}}, {"dtype", "fp32"}}}}});
  EXPECT_EQ(precision_target(ranged, m, -1, OpCost::Kind::Gemm), DType::BF16);
  EXPECT_EQ(precision_target(ranged, m, 3, OpCost::Kind::Gemm), DType::FP32);
}

TEST(PrecisionPass, AdaptiveSplitsTheLayers) {
  const Layout l = layout3d(2, 2, 2, 4);
  const Plan base = build(l);
  const json rule = {{"policy", "adaptive"}, {"low", "fp16"}, {"high", "fp32"}, {"redecide_every", 1}};
  auto adaptive = [&](double f) {
    json j = rule;
    j["low_fraction"] = f;
    return with_precision(base, j);
  };

  // low_fraction 0: the static high plan, plus the statistics op before each step.
  const Plan none_low = adaptive(0);
  const Plan high = with_precision(base, {{"dtype", "fp32"}});
  EXPECT_NO_THROW(validate(none_low));
  for (std::size_t p = 0; p < high.programs.size(); ++p) {
    const Program& a = none_low.programs[p];
    const Program& s = high.programs[p];
    EXPECT_EQ(a.params, s.params);
    const auto stats = ops_named(none_low, a, "precision.statistics");
    ASSERT_EQ(stats.size(), 1u);
    ASSERT_EQ(a.ops.size(), s.ops.size() + 1);
    for (std::size_t i = 0; i < s.ops.size(); ++i) expect_same_op(none_low, a.ops[i < stats[0] ? i : i + 1], high, s.ops[i]);
    EXPECT_TRUE(ops_named(none_low, a, "precision.loss_scale").empty());
    EXPECT_TRUE(depends_on(a, step_of(a), stats[0]));
  }

  // low_fraction 1: every layer low, the embedding and head high; fp16 gradients need loss scaling.
  const Plan all_low = adaptive(1);
  EXPECT_NO_THROW(validate(all_low));
  for (const Program& prog : all_low.programs) {
    for (const ParamTensor& t : prog.params) EXPECT_EQ(t.dtype, t.layer >= 0 ? DType::FP16 : DType::FP32);
    for (const PlanOp& op : prog.ops) {
      if (op.kind != OpKind::Compute || op.span == SpanKind::Optimizer) continue;
      if (cost_of(all_low, op).kernel != OpCost::Kernel::None) continue;
      EXPECT_EQ(cost_of(all_low, op).dtype, op.layer >= 0 ? DType::FP16 : DType::FP32) << name_of(all_low, op);
    }
    const auto scale = ops_named(all_low, prog, "precision.loss_scale");
    const auto stats = ops_named(all_low, prog, "precision.statistics");
    ASSERT_EQ(scale.size(), 1u);
    ASSERT_EQ(stats.size(), 1u);
    EXPECT_EQ(scale[0] + 1, stats[0]);
    EXPECT_EQ(stats[0] + 1, step_of(prog));
    EXPECT_TRUE(depends_on(prog, stats[0], scale[0]));
    std::int64_t fp16 = 0;
    for (const ParamTensor& t : prog.params) fp16 += t.dtype == DType::FP16 ? t.elements : 0;
    EXPECT_EQ(cost_of(all_low, prog.ops[scale[0]]).elements, fp16);
  }

  // low_fraction 0.5: exactly half the layers (1 and 3), evenly spread.
  const Plan half = adaptive(0.5);
  EXPECT_NO_THROW(validate(half));
  std::set<std::int32_t> low_layers;
  for (const Program& prog : half.programs) {
    for (const ParamTensor& t : prog.params) {
      if (t.dtype == DType::FP16) low_layers.insert(t.layer);
    }
  }
  EXPECT_EQ(low_layers, (std::set<std::int32_t>{1, 3}));
  // The rule in general: floor(layers · f) low layers.
  json seventy = rule;
  seventy["low_fraction"] = 0.7;
  const PrecisionParams p = params(seventy);
  const TransformerModel deep = gpt_model("deep", 10, 256, 8, 128, 1024);
  int low = 0;
  for (std::int64_t layer = 0; layer < 10; ++layer) low += precision_target(p, deep, layer, OpCost::Kind::Gemm) == DType::FP16;
  EXPECT_EQ(low, 7);
}

TEST(PrecisionPass, StatisticsAreAmortisedOverTheRedecisionPeriod) {
  const Layout l = layout3d(2, 1, 2, 3);
  const Plan base = build(l);
  for (std::int64_t every : {1, 7, 100}) {
    const Plan plan = with_precision(base, {{"policy", "adaptive"}, {"low", "bf16"}, {"high", "fp32"}, {"low_fraction", 0},
                                            {"redecide_every", every}});
    for (std::size_t p = 0; p < plan.programs.size(); ++p) {
      const Program& prog = plan.programs[p];
      const auto stats = ops_named(plan, prog, "precision.statistics");
      ASSERT_EQ(stats.size(), 1u);
      const OpCost& c = cost_of(plan, prog.ops[stats[0]]);
      const std::int64_t psi = rank_parameters(tiny(), 1, 2, 1, static_cast<int>(p)).total();
      EXPECT_EQ(c.kernel, OpCost::Kernel::Precision);
      EXPECT_EQ(c.elements, psi);
      // One read of every fp32 gradient, once per `every` iterations.
      EXPECT_EQ(c.bytes, std::llround(4.0 * static_cast<double>(psi) / static_cast<double>(every)));
    }
  }
}

TEST(PrecisionPass, ComposesAfterLora) {
  for (int zero : {0, 1, 3}) {
    Layout l = layout3d(2, 2, 2, 4);
    l.zero_stage = zero;
    Plan lora = build(l);
    apply_lora(lora, LoraParams{8, 16, {ParamKind::Qkv, ParamKind::Fc2}});
    const Plan plan = with_precision(lora, {{"dtype", "fp32"}});
    EXPECT_NO_THROW(validate(plan)) << "zero " << zero;
    int adapters = 0;
    for (std::size_t p = 0; p < plan.programs.size(); ++p) {
      const Program& before = lora.programs[p];
      const Program& after = plan.programs[p];
      ASSERT_EQ(after.ops.size(), before.ops.size());
      for (const ParamTensor& t : after.params) EXPECT_EQ(t.dtype, DType::FP32);
      for (std::size_t i = 0; i < after.ops.size(); ++i) {
        const PlanOp& y = after.ops[i];
        if (y.kind == OpKind::Compute && cost_of(plan, y).kernel == OpCost::Kernel::Lora) {
          ++adapters;
          const OpCost& c = cost_of(plan, y);
          EXPECT_EQ(c.dtype, DType::FP32);
          EXPECT_EQ(c.bytes, matmul_cost(c.name, c.kind, c.phase, c.m, c.n, c.k, c.batch, DType::FP32).bytes);
          EXPECT_EQ(c.bytes, 2 * cost_of(lora, before.ops[i]).bytes);
        }
        if (y.kind == OpKind::Collective && y.tensor_class == TensorClass::Grads) {
          EXPECT_EQ(y.bytes, 2 * before.ops[i].bytes) << name_of(plan, y);  // the adapters' gradients, now fp32
        }
      }
      // Frozen fp32 weights; the adapters' fp32 gradients and 8 B of Adam state each.
      EXPECT_EQ(model_state_of(after.params, l).grads, after.ops[1].bytes);
      EXPECT_EQ(model_state_of(after.params, l).optimizer, after.ops[2].bytes);
    }
    EXPECT_GT(adapters, 0);
  }
}

// An FP8 model runs Transformer Engine's recipe (model.hpp), whose ops are not of one dtype: the pass
// refuses it. The pass's own fp8 retypes a BF16 model's ops and leaves its BF16 messages as they were
// (activation_dtype).
TEST(PrecisionPass, Fp8ModelsAreRefusedAndFp8KeepsBf16Messages) {
  const Layout l = layout3d(2, 2, 2, 4);
  Plan fp8 = build(l, tiny(DType::FP8));
  EXPECT_THROW(apply_precision(fp8, params(json::object())), ConfigError);
  const Plan base = build(l);
  const Plan low = with_precision(base, {{"dtype", "fp8"}});
  EXPECT_NO_THROW(validate(low));
  int messages = 0, gemms = 0;
  for (std::size_t p = 0; p < low.programs.size(); ++p) {
    for (std::size_t i = 0; i < low.programs[p].ops.size(); ++i) {
      const PlanOp& y = low.programs[p].ops[i];
      if (y.kind == OpKind::Send || y.kind == OpKind::Recv || (y.kind == OpKind::Collective && y.group == GroupKind::Tp)) {
        ++messages;
        EXPECT_EQ(y.bytes, base.programs[p].ops[i].bytes) << name_of(low, y);
      }
      if (y.kind == OpKind::Compute && cost_of(low, y).kind == OpCost::Kind::Gemm && y.span != SpanKind::Optimizer) {
        ++gemms;
        EXPECT_EQ(cost_of(low, y).dtype, DType::FP8) << name_of(low, y);
      }
    }
  }
  EXPECT_GT(messages, 0);
  EXPECT_GT(gemms, 0);
}

TEST(PrecisionPass, AlreadyCompressedGradientsAreAnError) {
  Plan plan = build(layout3d(2, 1, 1, 2));
  bool edited = false;
  for (PlanOp& op : plan.programs[0].ops) {
    if (!edited && op.kind == OpKind::Collective && op.tensor_class == TensorClass::Grads) {
      op.bytes /= 4;  // as a 4-bit compression would leave it
      edited = true;
    }
  }
  ASSERT_TRUE(edited);
  try {
    apply_precision(plan, params({{"dtype", "fp32"}}));
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.path(), "");
    EXPECT_EQ(e.message().rfind("list precision before tgc", 0), 0u) << e.message();
  }
  // Through the registry the error names the entry.
  const auto pass = parse_technique({{"pass", "precision"}, {"dtype", "fp32"}}, "/techniques/2");
  EXPECT_EQ(error_path([&] { pass->apply(plan); }), "/techniques/2");
}

TEST(PrecisionPass, BadParametersNameTheirPath) {
  auto path_of = [](json j) { return error_path([&] { params(std::move(j)); }); };
  EXPECT_EQ(path_of({{"overrides", {{{"ops", "conv"}, {"dtype", "fp32"}}}}}), "/t/overrides/0/ops");
  EXPECT_EQ(path_of({{"overrides", {{{"dtype", "fp32"}}}}}), "/t/overrides/0/ops");
  EXPECT_EQ(path_of({{"overrides", {{{"ops", "gemm"}}}}}), "/t/overrides/0/dtype");
  EXPECT_EQ(path_of({{"overrides", {{{"ops", "gemm"}, {"dtype", "fp32"}, {"layers", {3, 1}}}}}}), "/t/overrides/0/layers");
  EXPECT_EQ(path_of({{"overrides", {{{"ops", "gemm"}, {"dtype", "fp32"}, {"layers", {-1, 1}}}}}}), "/t/overrides/0/layers/0");
  EXPECT_EQ(path_of({{"overrides", {{{"ops", "gemm"}, {"dtype", "fp32"}, {"scope", 1}}}}}), "/t/overrides/0/scope");
  EXPECT_EQ(path_of({{"overrides", "gemm"}}), "/t/overrides");
  EXPECT_EQ(path_of({{"dtype", "fp64"}}), "/t/dtype");
  EXPECT_EQ(path_of({{"policy", "greedy"}}), "/t/policy");
  EXPECT_EQ(path_of({{"loss_scaling", "static"}}), "/t/loss_scaling");
  EXPECT_EQ(path_of({{"colour", "blue"}}), "/t/colour");
  EXPECT_EQ(path_of({{"low_fraction", 0.5}}), "/t/low_fraction") << "an adaptive key under the static policy";
  EXPECT_EQ(path_of({{"policy", "adaptive"}, {"low_fraction", 0.5}, {"dtype", "fp32"}}), "/t/dtype");
  EXPECT_EQ(path_of({{"policy", "adaptive"}}), "/t/low_fraction");
  EXPECT_EQ(path_of({{"policy", "adaptive"}, {"low_fraction", 1.5}}), "/t/low_fraction");
  EXPECT_EQ(path_of({{"policy", "adaptive"}, {"low_fraction", 0.5}, {"redecide_every", 0}}), "/t/redecide_every");
  EXPECT_EQ(path_of({{"policy", "adaptive"}, {"low_fraction", 0.5}, {"low", "int4"}}), "/t/low");
  // A layer range beyond the model is the plan's to reject.
  Plan plan = build(layout3d(2, 1, 1, 2));
  const PrecisionParams beyond = params({{"overrides", {{{"ops", "gemm"}, {"layers", {2, 4}}, {"dtype", "fp32"}}}}});
  EXPECT_EQ(error_path([&] { apply_precision(plan, beyond); }), "/overrides/0/layers");
}

TEST(PrecisionPass, RegisteredAndRoundTrips) {
  EXPECT_NE(technique_passes().find("precision"), nullptr);
  const json entry = {{"pass", "precision"},
                      {"dtype", "bf16"},
                      {"overrides",
                       {{{"ops", "gemm"}, {"layers", {0, 3}}, {"dtype", "fp32"}}, {{"ops", "all"}, {"dtype", "fp16"}}}},
                      {"loss_scaling", "none"}};
  const auto pass = parse_technique(entry, "/techniques/0");
  EXPECT_EQ(pass->name(), "precision");
  const json adaptive_entry = {{"pass", "precision"}, {"policy", "adaptive"}, {"low_fraction", 0.7}};
  for (const json& j : {entry, adaptive_entry, json{{"pass", "precision"}}}) {
    const PrecisionParams p = precision_params_from_json(j, "/t");
    json back = precision_params_to_json(p);
    back["pass"] = "precision";
    EXPECT_EQ(precision_params_from_json(back, "/t"), p) << back.dump();
  }
  const json adaptive = precision_params_to_json(params({{"policy", "adaptive"}, {"low_fraction", 0.25}}));
  EXPECT_EQ(adaptive, (json{{"policy", "adaptive"}, {"low", "fp16"}, {"high", "fp32"}, {"low_fraction", 0.25},
                            {"redecide_every", 100}, {"loss_scaling", "dynamic"}}));
  EXPECT_EQ(error_path([] { parse_technique({{"pass", "precision"}, {"colour", "blue"}}, "/techniques/0"); }),
            "/techniques/0/colour");
  // The pass through the registry is the function.
  const Plan base = build(layout3d(2, 2, 2, 4));
  Plan via_registry = base;
  pass->apply(via_registry);
  EXPECT_EQ(via_registry, with_precision(base, entry));
}
