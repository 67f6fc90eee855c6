#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "support/layouts.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/passes.hpp"
#include "twinbed/core/passes/lora.hpp"

using namespace twinbed;
using twinbed::test_support::layout3d;

namespace {

TransformerModel tiny() { return gpt_model("tiny", 4, 256, 8, 128, 1024); }

Plan build(const Layout& l, const TransformerModel& m = tiny()) { return build_plan(m, l, {l.world_size(), 8}); }

const OpCost& cost_of(const Plan& plan, const PlanOp& op) { return plan.costs[static_cast<std::size_t>(op.cost)]; }

std::int64_t trainable(const Program& p) {
  std::int64_t n = 0;
  for (const ParamTensor& t : p.params) n += t.trainable ? t.elements : 0;
  return n;
}

}  // namespace

TEST(LoraPass, RankZeroIsTheIdentity) {
  const Plan base = build(layout3d(2, 2, 2, 4));
  Plan plan = base;
  apply_lora(plan, LoraParams{0, 16, {ParamKind::Qkv, ParamKind::Fc2}});
  EXPECT_EQ(plan, base);
}

TEST(LoraPass, SwapsWeightGradientsForAdapterGemms) {
  const int m = 3, r = 4;
  const Layout l = layout3d(2, 1, 1, m);
  const Plan base = build(l);
  Plan plan = base;
  const LoraParams p{r, 8, {ParamKind::Qkv, ParamKind::Fc2}};
  apply_lora(plan, p);
  EXPECT_NO_THROW(validate(plan));
  const Program& prog = plan.programs[0];
  const std::int64_t h = 256, tokens = 128, layers = 4;

  std::map<std::string, int> adapter_ops;
  double base_wgrad_flops = 0, removed_flops = 0, adapter_flops = 0;
  for (const PlanOp& op : base.programs[0].ops) {
    if (op.kind == OpKind::Compute && cost_of(base, op).phase == OpCost::Phase::BackwardWeight && op.span != SpanKind::Optimizer) {
      base_wgrad_flops += cost_of(base, op).is_matmul() ? cost_of(base, op).flops : 0;
    }
  }
  for (const PlanOp& op : prog.ops) {
    if (op.kind != OpKind::Compute) continue;
    const OpCost& c = cost_of(plan, op);
    if (c.kernel == OpCost::Kernel::Lora) {
      ++adapter_ops[c.name];
      adapter_flops += c.flops;
      // Every adapter GEMM has the rank as one of its dimensions.
      EXPECT_TRUE(c.m == r || c.n == r || c.k == r) << c.name;
      continue;
    }
    // No weight gradient of a base tensor is left.
    EXPECT_FALSE(c.phase == OpCost::Phase::BackwardWeight && op.span != SpanKind::Optimizer) << c.name;
  }
  removed_flops = base_wgrad_flops;
  // Two forward GEMMs and four backward per adapted matrix, layer and micro-batch.
  for (const std::string target : {"qkv", "fc2"}) {
    for (const std::string what : {"a_fwd", "b_fwd", "b_wgrad", "a_out_dgrad", "a_wgrad", "dgrad"}) {
      EXPECT_EQ(adapter_ops[target + ".lora_" + what], layers * m) << target << " " << what;
    }
  }
  // qkv (d = 3h, k = h): x·Aᵀ is (tokens, r, h) and ·Bᵀ (tokens, 3h, r): 2·tokens·r·(h + 3h) per pass.
  const double qkv_fwd = 2.0 * tokens * r * (h + 3 * h), fc2_fwd = 2.0 * tokens * r * (4 * h + h);
  EXPECT_DOUBLE_EQ(adapter_flops, layers * m * 3 * (qkv_fwd + fc2_fwd));  // backward = 2 × forward
  EXPECT_DOUBLE_EQ(plan.executed_flops(), base.executed_flops() - 2 * removed_flops + 2 * adapter_flops);

  // Trainable parameters: r·(d + k) per adapted matrix, and nothing else.
  const std::int64_t per_layer = r * (3 * h + h) + r * (h + 4 * h);
  EXPECT_EQ(trainable(prog), layers * per_layer);
  EXPECT_EQ(lora_trainable_parameters(tiny(), p), layers * per_layer);
  // The data-parallel reduction carries exactly the adapters' 16-bit gradients.
  Bytes reduced = 0;
  for (const PlanOp& op : prog.ops) {
    if (op.kind == OpKind::Collective && op.group == GroupKind::Dp) reduced += op.bytes;
  }
  EXPECT_EQ(reduced, 2 * layers * per_layer);
  // Model state: frozen 16-bit weights plus the adapters' weights, gradients and Adam state.
  const std::int64_t psi = rank_parameters(tiny(), 1, 1, 1, 0).total();
  EXPECT_EQ(prog.ops[0].bytes, 2 * (psi + layers * per_layer));
  EXPECT_EQ(prog.ops[1].bytes, 2 * layers * per_layer);
  EXPECT_EQ(prog.ops[2].bytes, 12 * layers * per_layer);
}

TEST(LoraPass, ValidOnEveryLayoutAndZeroStage) {
  for (int zero = 0; zero <= 3; ++zero) {
    for (Recompute rc : {Recompute::None, Recompute::Full}) {
      Layout l = layout3d(2, 2, 2, 4);
      l.zero_stage = zero;
      l.recompute = rc;
      Plan plan = build(l);
      apply_lora(plan, LoraParams{8, 16, {ParamKind::Qkv, ParamKind::Proj, ParamKind::Fc1, ParamKind::Fc2}});
      EXPECT_NO_THROW(validate(plan)) << "zero " << zero;
      for (const Program& p : plan.programs) {
        int tp_allreduce = 0;
        for (const PlanOp& op : p.ops) tp_allreduce += plan.names[op.name] == "lora.tp_allreduce";
        EXPECT_EQ(tp_allreduce, 1) << "replicated factors' gradients are summed over tp once";
        EXPECT_EQ(model_state_of(p.params, l).grads, zero >= 2 ? 2 * ((trainable(p) + 1) / 2) : 2 * trainable(p));
      }
    }
  }
}

// Hybrid sharding: each layer's reduce-scatter within the shard group carries its adapters' gradients,
// and the all-reduce across the groups after it their shard, each tensor's half (rounded up).
TEST(LoraPass, HybridShardingReducesTheAdaptersShard) {
  Layout l = layout3d(4, 1, 1, 2);
  l.zero_stage = 3;
  l.zero_shard_ranks = 2;
  Plan plan = build(l);
  apply_lora(plan, LoraParams{8, 16, {ParamKind::Qkv, ParamKind::Fc2}});
  EXPECT_NO_THROW(validate(plan));
  const Program& p = plan.programs[0];
  int scatters = 0, all_reduces = 0;
  for (const PlanOp& op : p.ops) {
    if (op.kind != OpKind::Collective || op.tensor_class != TensorClass::Grads) continue;
    const std::vector<ParamSlice>& set = p.param_sets[static_cast<std::size_t>(op.params)];
    for (const ParamSlice& s : set) EXPECT_TRUE(p.params[static_cast<std::size_t>(s.tensor)].trainable);
    EXPECT_EQ(op.bytes, set_elements(set) * 2);
    if (op.collective == CollectiveOp::ReduceScatter) {
      ++scatters;
      for (const ParamSlice& s : set) EXPECT_EQ(s.elements, p.params[static_cast<std::size_t>(s.tensor)].elements);
    } else if (op.collective == CollectiveOp::AllReduce && op.group == GroupKind::ZeroReplica) {
      ++all_reduces;
      for (const ParamSlice& s : set) EXPECT_EQ(s.elements, (p.params[static_cast<std::size_t>(s.tensor)].elements + 1) / 2);
    }
  }
  EXPECT_EQ(scatters, 4 * 2);  // 4 layers, 2 micro-batches (the frozen embedding's dropped)
  EXPECT_EQ(all_reduces, scatters);
}

// ZeRO 1-2: the frozen base needs no gather; the adapters' updated shards are gathered after the step,
// or with overlap_param_gather at the start of the next, each adapter's first forward GEMM waiting.
TEST(LoraPass, GathersTheAdaptersOnlyAfterTheStepOrAheadOfTheForward) {
  for (bool ahead : {false, true}) {
    Layout l = layout3d(2, 1, 2, 4);
    l.zero_stage = 1;
    l.bucket_bytes = 4 * KiB;  // several buckets
    l.overlap_param_gather = ahead;
    Plan plan = build(l);
    apply_lora(plan, LoraParams{8, 16, {ParamKind::Qkv, ParamKind::Fc2}});
    EXPECT_NO_THROW(validate(plan));
    for (const Program& p : plan.programs) {
      std::uint32_t step = 0;
      while (p.ops[step].span != SpanKind::Optimizer) ++step;
      Bytes gathered = 0;
      std::set<std::int32_t> waited;
      std::map<std::int32_t, std::uint32_t> first_forward;  // adapter tensor -> its first forward GEMM
      for (std::uint32_t i = 0; i < p.size(); ++i) {
        const PlanOp& op = p.ops[i];
        if (op.kind == OpKind::Compute && op.params >= 0 && cost_of(plan, op).phase == OpCost::Phase::Forward) {
          for (const ParamSlice& s : p.param_sets[static_cast<std::size_t>(op.params)]) {
            if (p.params[static_cast<std::size_t>(s.tensor)].trainable) first_forward.emplace(s.tensor, i);
          }
        }
      }
      for (std::uint32_t i = 0; i < p.size(); ++i) {
        const PlanOp& op = p.ops[i];
        if (op.kind != OpKind::Collective || op.collective != CollectiveOp::AllGather || op.params < 0) continue;
        EXPECT_EQ(plan.names[op.name].rfind("lora.dp.param_allgather", 0), 0u) << plan.names[op.name];
        EXPECT_EQ(ahead, i < step) << plan.names[op.name];
        gathered += op.bytes;
        for (const ParamSlice& s : p.param_sets[static_cast<std::size_t>(op.params)]) {
          EXPECT_TRUE(p.params[static_cast<std::size_t>(s.tensor)].trainable);
          if (!ahead) continue;
          const std::uint32_t user = first_forward.at(s.tensor);
          EXPECT_TRUE(std::count(p.deps_of(user), p.deps_of(user) + p.num_deps(user), i)) << plan.names[p.ops[user].name];
          waited.insert(s.tensor);
        }
      }
      EXPECT_EQ(gathered, 2 * trainable(p));
      if (ahead) {
        EXPECT_EQ(waited.size(), first_forward.size());
      }
    }
  }
}

TEST(LoraPass, ErrorsNameTheEntry) {
  TransformerModel moe = tiny();
  moe.experts = 4;
  Plan plan = build(layout3d(2, 1, 1, 2), moe);
  try {
    apply_lora(plan, LoraParams{8, 16, {ParamKind::Qkv, ParamKind::Fc1}});
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.path(), "/targets/1");
  }
  EXPECT_THROW(lora_params_from_json({{"pass", "lora"}, {"targets", {"router"}}}, "/t"), ConfigError);
  EXPECT_THROW(lora_params_from_json({{"pass", "lora"}, {"alpha", 0}}, "/t"), ConfigError);
}

// The optimizer step as separate passes (TransformerModel::fused_optimizer false) is what the builder
// costs, and LoRA re-costs it the same way for the adapters it leaves trainable: fewer bytes than the
// dense step, more than the fused step over the same adapters.
TEST(LoraPass, KeepsTheModelsOptimizerStep) {
  TransformerModel m = tiny();
  m.fused_optimizer = false;
  const Layout l = layout3d(2, 1, 1, 2);
  auto step_of = [](const Plan& plan, const Program& prog) -> const OpCost& {
    for (const PlanOp& op : prog.ops)
      if (op.span == SpanKind::Optimizer) return cost_of(plan, op);
    throw std::logic_error("no optimizer step");
  };
  const Plan base = build(l, m);
  const Program& dense = base.programs[0];
  EXPECT_EQ(step_of(base, dense).bytes, optimizer_step_cost(dense.params, l, false).bytes);
  EXPECT_EQ(step_of(base, dense).bytes, 46 * trainable(dense));  // BF16 weights and gradients
  Plan plan = base;
  apply_lora(plan, LoraParams{4, 16, {ParamKind::Qkv, ParamKind::Fc2}});
  const Program& adapted = plan.programs[0];
  const OpCost& step = step_of(plan, adapted);
  EXPECT_EQ(step.bytes, optimizer_step_cost(adapted.params, l, false).bytes);
  EXPECT_GT(step.bytes, optimizer_step_cost(adapted.params, l, true).bytes);
  EXPECT_LT(step.bytes, step_of(base, dense).bytes);
}

// Without fused gradient accumulation the passes adding each micro-batch's weight gradient into the
// buffer belong to their tensors: LoRA, freezing every base tensor, drops them with the GEMMs.
TEST(LoraPass, DropsTheFrozenTensorsGradientAccumulation) {
  TransformerModel m = tiny();
  m.fused_grad_accumulation = false;
  const Layout l = layout3d(2, 1, 1, 3);
  const Plan base = build(l, m);
  auto accumulations = [](const Plan& plan) {
    int n = 0;
    for (const PlanOp& op : plan.programs[0].ops) n += plan.names[op.name].ends_with("_grad_accumulate") ? 1 : 0;
    return n;
  };
  ASSERT_GT(accumulations(base), 0);
  Plan plan = base;
  apply_lora(plan, LoraParams{4, 16, {ParamKind::Qkv, ParamKind::Fc2}});
  EXPECT_EQ(accumulations(plan), 0);
}

// With grouped-query attention and SwiGLU the adapted matrices are QKV's q×h (q = qkv_width) and FC1's
// 2f×h: the plan's trainable parameters after LoRA are lora_trainable_parameters'.
TEST(LoraPass, AdaptsGroupedQueryAttentionAndSwigluShapes) {
  TransformerModel m = tiny();
  m.kv_heads = 2;
  m.activation = FfnActivation::Swiglu;
  const Layout l = layout3d(1, 1, 1, 2);
  Plan plan = build(l, m);
  const LoraParams p{4, 16, {ParamKind::Qkv, ParamKind::Fc1}};
  apply_lora(plan, p);
  const std::int64_t h = m.hidden, r = 4;
  const std::int64_t per_layer = r * (m.qkv_width() + h) + r * (2 * m.ffn() + h);
  EXPECT_EQ(m.qkv_width(), h + 2 * 2 * (h / m.heads));
  EXPECT_EQ(trainable(plan.programs[0]), m.layers * per_layer);
  EXPECT_EQ(lora_trainable_parameters(m, p), m.layers * per_layer);
}

// With heads of their own width (head_dim) the projection's input is the attention's a·d columns, not h:
// its adapter is r·(h + a·d), in the plan and in lora_trainable_parameters alike.
TEST(LoraPass, AdaptsTheProjectionOverTheAttentionWidth) {
  TransformerModel m = tiny();
  m.head_dim = 2 * m.hidden / m.heads;
  const Layout l = layout3d(1, 1, 1, 2);
  Plan plan = build(l, m);
  const LoraParams p{4, 16, {ParamKind::Proj}};
  apply_lora(plan, p);
  const std::int64_t h = m.hidden, r = 4;
  EXPECT_EQ(m.attention_width(), 2 * h);
  EXPECT_EQ(trainable(plan.programs[0]), m.layers * r * (h + 2 * h));
  EXPECT_EQ(lora_trainable_parameters(m, p), m.layers * r * (h + 2 * h));
}
