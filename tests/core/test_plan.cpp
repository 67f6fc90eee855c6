#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "support/layouts.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/plan.hpp"

using namespace twinbed;
using twinbed::test_support::layout3d;

namespace {

TransformerModel tiny() { return gpt_model("tiny", 8, 256, 8, 128, 1024); }
// tiny() with 4 experts, each token routed to 2.
TransformerModel tiny_moe() {
  TransformerModel m = tiny();
  m.experts = 4;
  m.top_k = 2;
  return m;
}

ClusterShape cluster(const Layout& l, int per_host = 8) { return {l.world_size(), per_host}; }

std::map<std::string, int> count_names(const Plan& plan, const Program& p, OpKind kind) {
  std::map<std::string, int> out;
  for (const PlanOp& op : p.ops) {
    if (op.kind != kind) continue;
    std::string n = plan.names[op.name];
    n = n.substr(n.find('.') + 1);  // strip the layer prefix
    ++out[n];
  }
  return out;
}

int count(const Program& p, OpKind kind, GroupKind g) {
  int n = 0;
  for (const PlanOp& op : p.ops) n += op.kind == kind && (kind != OpKind::Collective || op.group == g);
  return n;
}

}  // namespace

// plan.hpp's figure for the memory of a Program: 60 bytes per op, 4 per dependency.
TEST(Plan, RepresentationCostsWhatTheHeaderSays) {
  EXPECT_EQ(sizeof(PlanOp), 56u);
  EXPECT_EQ(sizeof(Program::dep_begin[0]), 4u);
  EXPECT_EQ(sizeof(Program::deps[0]), 4u);
}

// The optimizer step per updated parameter (the counts in plan.hpp): fused, AdamW's 28 bytes and 16
// FLOPs in any precision; as Megatron-LM's separate passes, BF16 weights with BF16 gradients 46 bytes
// (gradients to FP32 2 + 4, norm 4, Adam 28, weights back 4 + 2, zeroing 2), with FP32 gradient buffers
// 42 (no copy, zeroing 4), FP32 weights 36 (norm, Adam, zeroing); 18 FLOPs with the norm's. ZeRO-1
// over dp 4 updates a quarter of them; frozen tensors none.
TEST(Plan, OptimizerStepCost) {
  ParamTensor bf16;
  bf16.elements = 1000;
  ParamTensor fp32 = bf16;
  fp32.dtype = DType::FP32;
  fp32.elements = 400;
  ParamTensor frozen = bf16;
  frozen.trainable = false;
  Layout l;  // dp 1, no ZeRO, gradients in the model's dtype
  const OpCost step = optimizer_step_cost({bf16}, l, true);
  EXPECT_EQ(step.bytes, 28000);
  EXPECT_EQ(step.flops, 16000.0);
  EXPECT_EQ(step.kind, OpCost::Kind::MemoryBound);
  EXPECT_EQ(step.dtype, DType::FP32);
  EXPECT_EQ(optimizer_step_cost({bf16, fp32, frozen}, l, true).bytes, 28 * 1400);
  EXPECT_EQ(optimizer_step_cost({bf16}, l, false).bytes, 46000);
  EXPECT_EQ(optimizer_step_cost({bf16}, l, false).flops, 18000.0);
  EXPECT_EQ(optimizer_step_cost({fp32}, l, false).bytes, 36 * 400);
  EXPECT_EQ(optimizer_step_cost({bf16, fp32, frozen}, l, false).bytes, 46000 + 36 * 400);
  Layout fp32_grads = l;
  fp32_grads.grad_dtype = GradDtype::FP32;
  EXPECT_EQ(optimizer_step_cost({bf16}, fp32_grads, false).bytes, 42000);
  Layout zero1 = l;
  zero1.dp = 4;
  zero1.zero_stage = 1;
  EXPECT_EQ(optimizer_step_cost({bf16}, zero1, false).bytes, 46 * 250);
}

// The builder costs the step the model's way (TransformerModel::fused_optimizer).
TEST(Plan, TheOptimizerStepIsTheModels) {
  const Layout l = layout3d(2, 2, 2, 4);
  for (const bool fused : {true, false}) {
    TransformerModel m = tiny();
    m.fused_optimizer = fused;
    const Plan plan = build_plan(m, l, cluster(l));
    for (const Program& prog : plan.programs) {
      for (const PlanOp& op : prog.ops) {
        if (op.span != SpanKind::Optimizer) continue;
        EXPECT_EQ(plan.costs[static_cast<std::size_t>(op.cost)], optimizer_step_cost(prog.params, l, fused));
      }
    }
  }
}

// Without fused gradient accumulation every weight-gradient op of micro-batches 1.. is followed, on the
// Compute stream, by the pass adding it into the gradient buffer: its tensor's elements × (the fresh
// BF16 gradient read, the buffer read and written: 2 + 2·2 bytes; 2 + 2·4 with FP32 gradient buffers),
// the same parameter set, one element-wise add each. Fused (the default), and on micro-batch 0, none.
TEST(Plan, UnfusedGradientAccumulationAddsAPassAfterEachWeightGradient) {
  Layout l = layout3d(1, 1, 2, 4);  // pp 2, 4 micro-batches
  TransformerModel m = tiny();
  const Plan fused = build_plan(m, l, cluster(l));
  m.fused_grad_accumulation = false;
  for (const GradDtype g : {GradDtype::Model, GradDtype::FP32}) {
    l.grad_dtype = g;
    const Bytes per = 2 + 2 * (g == GradDtype::FP32 ? 4 : 2);
    const Plan plan = build_plan(m, l, cluster(l));
    for (std::size_t p = 0; p < plan.programs.size(); ++p) {
      const Program& prog = plan.programs[p];
      int wgrads = 0, adds = 0;
      for (std::uint32_t i = 0; i < prog.ops.size(); ++i) {
        const PlanOp& op = prog.ops[i];
        if (op.kind != OpKind::Compute) continue;
        const std::string& name = plan.names[op.name];
        const OpCost& cost = plan.costs[static_cast<std::size_t>(op.cost)];
        if (name.ends_with("_wgrad") && op.params >= 0 && op.micro_batch > 0) {
          ++wgrads;
          ASSERT_LT(i + 1, prog.ops.size());
          const PlanOp& next = prog.ops[i + 1];
          const OpCost& add = plan.costs[static_cast<std::size_t>(next.cost)];
          EXPECT_EQ(plan.names[next.name], name.substr(0, name.size() - 6) + "_grad_accumulate");
          EXPECT_EQ(next.params, op.params);
          EXPECT_EQ(next.stream, StreamKind::Compute);
          EXPECT_EQ(next.micro_batch, op.micro_batch);
          std::int64_t elements = 0;
          for (const ParamSlice& sl : prog.param_sets[static_cast<std::size_t>(op.params)]) elements += sl.elements;
          EXPECT_EQ(add.bytes, elements * per) << name;
          EXPECT_EQ(add.kind, OpCost::Kind::MemoryBound);
          EXPECT_EQ(add.flops, static_cast<double>(elements));
          const std::uint32_t* d = prog.deps.data() + prog.dep_begin[i + 1];
          EXPECT_EQ(*d, i) << "the pass follows its weight gradient";
        }
        if (name.ends_with("_grad_accumulate")) {
          ++adds;
          EXPECT_GT(op.micro_batch, 0);
          EXPECT_EQ(cost.phase, OpCost::Phase::BackwardWeight);
        }
      }
      EXPECT_GT(wgrads, 0);
      EXPECT_EQ(adds, wgrads);
      // One more op per weight gradient of micro-batches 1..3 than the fused plan's program.
      EXPECT_EQ(prog.ops.size(), fused.programs[p].ops.size() + static_cast<std::size_t>(adds));
    }
  }
}

TEST(Plan, OneProgramPerStageSharedByItsRanks) {
  const Layout l = layout3d(2, 2, 2, 4);
  const Plan plan = build_plan(tiny(), l, cluster(l));
  ASSERT_EQ(plan.programs.size(), 2u);
  ASSERT_EQ(plan.program_of_rank, (std::vector<int>{0, 0, 0, 0, 1, 1, 1, 1}));
  EXPECT_NO_THROW(validate(plan));
  EXPECT_EQ(plan.total_ops(), 4 * static_cast<std::int64_t>(plan.programs[0].size() + plan.programs[1].size()));
  // Megatron order: tp fastest, then dp, then pp.
  EXPECT_EQ(plan.group_members(5, GroupKind::Tp), (std::vector<int>{4, 5}));
  EXPECT_EQ(plan.group_members(5, GroupKind::Dp), (std::vector<int>{5, 7}));
  EXPECT_EQ(plan.group_members(5, GroupKind::Pp), (std::vector<int>{1, 5}));
  EXPECT_EQ(plan, build_plan(tiny(), l, cluster(l)));
}

// The tied word embedding (Megatron): with pp > 1 its gradient is all-reduced between the first and
// the last stage — once per iteration, ⌈V/tp⌉·h gradients, on the Collective stream, over the
// Embedding group {first-stage rank, last-stage rank}, before the optimizer step; middle stages and
// pp == 1 have none.
TEST(Plan, TiedEmbeddingGradientIsAllReducedBetweenFirstAndLastStage) {
  const Layout l = layout3d(2, 2, 4, 4);
  const Plan plan = build_plan(tiny(), l, cluster(l));
  EXPECT_EQ(plan.group_members(3, GroupKind::Embedding), (std::vector<int>{3, 15}));
  EXPECT_EQ(plan.group_members(15, GroupKind::Embedding), (std::vector<int>{3, 15}));
  EXPECT_THROW(plan.group_members(5, GroupKind::Embedding), InvalidArgument);  // a middle stage
  const TransformerModel m = tiny();
  const Bytes word = (m.vocab + l.tp - 1) / l.tp * m.hidden * gradient_bytes_per_element(m.dtype);
  for (int stage = 0; stage < 4; ++stage) {
    const Program& p = plan.programs[static_cast<std::size_t>(stage)];
    const bool holds = stage == 0 || stage == 3;
    EXPECT_EQ(count(p, OpKind::Collective, GroupKind::Embedding), holds ? 1 : 0) << "stage " << stage;
    for (std::size_t i = 0; i < p.ops.size(); ++i) {
      const PlanOp& op = p.ops[i];
      if (op.kind != OpKind::Collective || op.group != GroupKind::Embedding) continue;
      EXPECT_EQ(plan.names[op.name], "embedding.pp_allreduce");
      EXPECT_EQ(op.collective, CollectiveOp::AllReduce);
      EXPECT_EQ(op.stream, StreamKind::Collective);
      EXPECT_EQ(op.tensor_class, TensorClass::Grads);
      EXPECT_EQ(op.bytes, word);
      // The optimizer step waits for it.
      bool waited = false;
      for (std::size_t j = i + 1; j < p.ops.size(); ++j) {
        if (plan.names[p.ops[j].name] != "optimizer_step") continue;
        for (std::size_t d = 0; d < p.num_deps(j); ++d) waited = waited || p.deps_of(j)[d] == i;
      }
      EXPECT_TRUE(waited);
    }
  }
  const Layout one = layout3d(2, 2, 1, 4);
  const Plan flat = build_plan(tiny(), one, cluster(one));
  EXPECT_EQ(count(flat.programs[0], OpKind::Collective, GroupKind::Embedding), 0);
  EXPECT_TRUE(flat.group_set(GroupKind::Embedding).members.empty());
  // Untied (Llama's output matrix of its own): nothing to keep equal, no all-reduce; the last stage's
  // parameters are the same count, the plan's model state the layout's.
  TransformerModel untied = tiny();
  untied.tie_embeddings = false;
  const Plan u = build_plan(untied, l, cluster(l));
  EXPECT_NO_THROW(validate(u));
  for (int stage = 0; stage < 4; ++stage) {
    const Program& p = u.programs[static_cast<std::size_t>(stage)];
    EXPECT_EQ(count(p, OpKind::Collective, GroupKind::Embedding), 0) << "stage " << stage;
    EXPECT_EQ(model_state_of(p.params, l), rank_model_state_bytes(untied, l, stage));
    EXPECT_EQ(model_state_of(p.params, l), model_state_of(plan.programs[static_cast<std::size_t>(stage)].params, l));
  }
}

TEST(Plan, TensorParallelCollectivesPerLayer) {
  const Layout l = layout3d(1, 2, 2, 4);
  const Plan plan = build_plan(tiny(), l, cluster(l));
  const int layers_per_stage = 4, m = 4;
  // Two all-reduces forward and two backward per layer and micro-batch; stage 0 also all-reduces the
  // vocabulary-parallel embedding output once per micro-batch. Each pipeline message is a t-th of the
  // activation (or its gradient) from each TP rank, all-gathered over the TP group on receipt: stage 1
  // gathers each micro-batch's activation, stage 0 its gradient.
  EXPECT_EQ(count(plan.programs[1], OpKind::Collective, GroupKind::Tp), 4 * layers_per_stage * m + m);
  EXPECT_EQ(count(plan.programs[0], OpKind::Collective, GroupKind::Tp), 4 * layers_per_stage * m + m + m);
  const Bytes bsh = 1 * 128 * 256 * 2;  // tiny(): s 128, h 256, BF16; micro-batch 1
  for (std::size_t stage = 0; stage < 2; ++stage) {
    const Program& p = plan.programs[stage];
    for (std::size_t i = 0; i < p.ops.size(); ++i) {
      const PlanOp& op = p.ops[i];
      if (op.kind == OpKind::Send || op.kind == OpKind::Recv) {
        EXPECT_EQ(op.bytes, bsh / 2);
      }
      if (op.kind != OpKind::Recv) continue;
      ASSERT_LT(i + 1, p.ops.size());
      const PlanOp& gather = p.ops[i + 1];
      EXPECT_EQ(gather.collective, CollectiveOp::AllGather);
      EXPECT_EQ(gather.group, GroupKind::Tp);
      EXPECT_EQ(gather.bytes, bsh);  // the gathered activation
      EXPECT_EQ(gather.stream, StreamKind::Compute);
      EXPECT_EQ(p.deps_of(i + 1)[0], i) << "the gather waits for the message";
    }
  }

  Layout sp = l;
  sp.sequence_parallel = true;
  const Plan psp = build_plan(tiny(), sp, cluster(sp));
  auto names = count_names(psp, psp.programs[1], OpKind::Collective);
  // Each all-reduce becomes a reduce-scatter and an all-gather: 4 of each per layer and micro-batch;
  // and QKV's and FC1's backward all-gather their inputs again for the weight gradients (Megatron
  // keeps only the sequence-split input; test_plan_builder_tp.cpp), 2 more all-gathers.
  EXPECT_EQ(names["tp_allgather"] + names["tp_allgather_bwd"], 4 * layers_per_stage * m);
  EXPECT_EQ(names["tp_allgather_wgrad"], 2 * layers_per_stage * m);
  EXPECT_EQ(names["tp_reducescatter"] + names["tp_reducescatter_bwd"], 4 * layers_per_stage * m);
  EXPECT_EQ(names.count("tp_allreduce"), 0u);
  // SP's messages are the sequence shards the next stage works on: nothing to gather.
  EXPECT_EQ(names.count("recv_act_allgather"), 0u);
}

TEST(Plan, PipelineSendsMatchReceives) {
  for (PipelineSchedule s : {PipelineSchedule::GPipe, PipelineSchedule::OneFOneB, PipelineSchedule::Interleaved1F1B}) {
    Layout l = layout3d(2, 1, 4, 8);
    l.schedule = s;
    l.virtual_stages = s == PipelineSchedule::Interleaved1F1B ? 2 : 1;
    const Plan plan = build_plan(tiny(), l, cluster(l));
    EXPECT_NO_THROW(validate(plan)) << schedule_name(s);
    const int v = l.virtual_stages;
    // Stage 0 sends every micro-batch's activation forward once per chunk, and receives its gradient;
    // with interleaving it also receives chunk 1's input from the last stage.
    EXPECT_EQ(count(plan.programs[0], OpKind::Send, GroupKind::Tp), 8 * (2 * v - 1)) << schedule_name(s);
    EXPECT_EQ(count(plan.programs[3], OpKind::Send, GroupKind::Tp), 8 * (2 * v - 1)) << schedule_name(s);
    for (const PlanOp& op : plan.programs[1].ops) {
      if (op.kind == OpKind::Send) {
        EXPECT_EQ(op.bytes, 1 * 128 * 256 * 2);  // b·s·h·dtype
      }
    }
  }
}

// Blocking pipeline sends (Megatron's default, Layout::overlap_p2p_comm off): each Send is followed by a
// SendDone of its message on the compute stream, depending on it; overlapped sends have none.
TEST(Plan, BlockingPipelineSendsAreFollowedByASendDone) {
  for (bool overlap : {false, true}) {
    Layout l = layout3d(1, 1, 2, 4);
    l.overlap_p2p_comm = overlap;
    const Plan plan = build_plan(tiny(), l, cluster(l));
    int sends = 0, dones = 0;
    for (const Program& p : plan.programs) {
      for (std::size_t i = 0; i < p.size(); ++i) {
        const PlanOp& op = p.ops[i];
        if (op.kind == OpKind::Send) ++sends;
        if (op.kind != OpKind::SendDone) continue;
        ++dones;
        EXPECT_EQ(op.stream, StreamKind::Compute);
        ASSERT_EQ(p.num_deps(i), 1u);
        const PlanOp& send = p.ops[p.deps_of(i)[0]];
        EXPECT_EQ(send.kind, OpKind::Send);
        EXPECT_EQ(send.peer_offset, op.peer_offset);
        EXPECT_EQ(send.tag, op.tag);
      }
    }
    EXPECT_GT(sends, 0);
    EXPECT_EQ(dones, overlap ? 0 : sends) << "overlap " << overlap;
  }
}

// The loss keeps its softmax (Megatron's loss: FP32, b·s·⌈V/t⌉ of it) from the head's forward to the
// cross-entropy's backward on the last stage, one micro-batch's at a time under 1F1B; no other stage holds it.
TEST(Plan, TheLastStageHoldsTheLossActivationsBetweenTheHeadsPasses) {
  Layout l = layout3d(1, 2, 2, 4);
  const TransformerModel m = tiny();  // s 128, V 1024
  const Plan plan = build_plan(m, l, cluster(l));
  const Bytes expect = 1 * 128 * (1024 / 2) * 4;
  EXPECT_EQ(rank_loss_activation_bytes(m, l), expect);
  for (std::size_t stage = 0; stage < plan.programs.size(); ++stage) {
    const Program& p = plan.programs[stage];
    int allocs = 0, frees = 0;
    for (std::size_t i = 0; i < p.ops.size(); ++i) {
      const PlanOp& op = p.ops[i];
      if (plan.names[op.name] != "loss.activations") continue;
      EXPECT_EQ(op.bytes, expect);
      EXPECT_EQ(op.tensor_class, TensorClass::Activation);
      if (op.kind == OpKind::Alloc) {
        ++allocs;
        EXPECT_EQ(plan.names[p.ops[p.deps_of(i)[0]].name], "cross_entropy_fwd");
      }
      if (op.kind == OpKind::Free) {
        ++frees;
        EXPECT_EQ(plan.names[p.ops[p.deps_of(i)[0]].name], "cross_entropy_bwd");
      }
    }
    EXPECT_EQ(allocs, stage + 1 == plan.programs.size() ? 4 : 0) << "stage " << stage;
    EXPECT_EQ(frees, allocs);
  }
  TransformerModel fused = m;
  fused.loss = LossImpl::Fused;  // the logits in their own dtype (BF16) and a row's FP32 log-sum-exp
  EXPECT_EQ(rank_loss_activation_bytes(fused, l), 1 * 128 * (1024 / 2) * 2 + 4 * 128);
}

TEST(Plan, DataParallelBucketsCoverTheGradients) {
  for (int zero : {0, 1, 2}) {
    Layout l = layout3d(4, 1, 2, 4);
    l.zero_stage = zero;
    l.bucket_bytes = 1 * MiB;
    const Plan plan = build_plan(tiny(), l, cluster(l));
    for (int stage = 0; stage < 2; ++stage) {
      Bytes reduced = 0, gathered = 0;
      for (const PlanOp& op : plan.programs[static_cast<std::size_t>(stage)].ops) {
        if (op.kind != OpKind::Collective || op.group != GroupKind::Dp) continue;
        EXPECT_EQ(op.stream, StreamKind::Collective);
        EXPECT_LE(op.bytes, l.bucket_bytes);
        if (op.collective == (zero == 0 ? CollectiveOp::AllReduce : CollectiveOp::ReduceScatter)) reduced += op.bytes;
        if (op.collective == CollectiveOp::AllGather) gathered += op.bytes;
      }
      const Bytes grads = 2 * rank_parameters(tiny(), 1, 2, 1, stage).dense;  // unsharded 16-bit gradients
      EXPECT_EQ(reduced, grads) << "zero " << zero << " stage " << stage;
      EXPECT_EQ(gathered, zero == 0 ? 0 : grads) << "zero " << zero << " stage " << stage;
    }
  }
}

TEST(Plan, OverlappedBucketsDependOnTheBackwardThatProducesThem) {
  Layout l = layout3d(2, 1, 1, 2);
  l.bucket_bytes = 1 * MiB;
  const Plan plan = build_plan(tiny(), l, cluster(l));
  const Program& p = plan.programs[0];
  std::uint32_t first_bucket_dep = 0, last_bucket_dep = 0;
  bool first = true;
  for (std::size_t i = 0; i < p.size(); ++i) {
    if (p.ops[i].kind != OpKind::Collective) continue;
    ASSERT_EQ(p.num_deps(i), 1u);
    if (first) first_bucket_dep = p.deps_of(i)[0];
    last_bucket_dep = p.deps_of(i)[0];
    first = false;
  }
  EXPECT_LT(first_bucket_dep, last_bucket_dep);  // early buckets wait for early (last-layer) gradients
  l.overlap_grad_reduce = false;
  const Plan serial = build_plan(tiny(), l, cluster(l));
  // Without overlap every bucket waits for the whole backward: no compute op but the optimizer step
  // comes after the op it depends on. (Op indices differ between the two plans: overlapped buckets are
  // issued inside the backward.)
  const Program& s = serial.programs[0];
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s.ops[i].kind != OpKind::Collective) continue;
    ASSERT_EQ(s.num_deps(i), 1u);
    for (std::size_t j = s.deps_of(i)[0] + 1; j < s.size(); ++j) {
      if (s.ops[j].kind == OpKind::Compute) {
        EXPECT_EQ(serial.names[s.ops[j].name], "optimizer_step");
      }
    }
  }
}

// overlap_param_gather: ZeRO 1-2's parameter gathers are the same buckets, issued at the start of the
// step in forward order, and each tensor's first forward op waits for the gathers that hold it.
TEST(Plan, ParameterGathersAheadOverlapTheForward) {
  TransformerModel moe = tiny();
  moe.experts = 4;
  Layout interleaved = layout3d(2, 2, 2, 4);
  interleaved.schedule = PipelineSchedule::Interleaved1F1B;
  interleaved.virtual_stages = 2;
  Layout experts = layout3d(4, 1, 2, 4);
  experts.ep = 2;
  struct Case {
    TransformerModel model;
    Layout layout;
  };
  for (Case c : {Case{tiny(), layout3d(2, 1, 2, 4)}, Case{tiny(), interleaved}, Case{moe, experts}}) {
    for (int zero : {1, 2}) {
      Layout l = c.layout;
      l.zero_stage = zero;
      l.bucket_bytes = 100 * KiB;  // buckets straddle tensors
      const Plan after = build_plan(c.model, l, cluster(l));
      l.overlap_param_gather = true;
      const Plan ahead = build_plan(c.model, l, cluster(l));
      EXPECT_NO_THROW(validate(ahead));
      for (std::size_t s = 0; s < ahead.programs.size(); ++s) {
        const Program& p = ahead.programs[s];
        const Program& q = after.programs[s];
        auto gathers = [](const Program& prog) {
          std::vector<std::uint32_t> out;
          for (std::uint32_t i = 0; i < prog.size(); ++i) {
            const PlanOp& op = prog.ops[i];
            if (op.kind == OpKind::Collective && op.collective == CollectiveOp::AllGather && op.params >= 0) out.push_back(i);
          }
          return out;
        };
        const std::vector<std::uint32_t> g = gathers(p);
        ASSERT_FALSE(g.empty());
        // The same buckets per communicator, last first; all before the first compute op.
        std::uint32_t first_compute = 0;
        while (p.ops[first_compute].kind != OpKind::Compute) ++first_compute;
        for (GroupKind group : {GroupKind::Dp, GroupKind::ExpertDp}) {
          std::vector<std::uint32_t> mine, theirs;
          for (std::uint32_t i : g) {
            if (p.ops[i].group == group) mine.push_back(i);
          }
          for (std::uint32_t i : gathers(q)) {
            if (q.ops[i].group == group) theirs.push_back(i);
          }
          ASSERT_EQ(mine.size(), theirs.size());
          for (std::size_t k = 0; k < mine.size(); ++k) {
            const PlanOp& a = p.ops[mine[k]];
            const PlanOp& b = q.ops[theirs[theirs.size() - 1 - k]];
            EXPECT_LT(mine[k], first_compute);
            EXPECT_EQ(p.num_deps(mine[k]), 0u);
            EXPECT_EQ(a.bytes, b.bytes);
            EXPECT_EQ(p.param_sets[static_cast<std::size_t>(a.params)], q.param_sets[static_cast<std::size_t>(b.params)]);
          }
        }
        // Each gathered tensor's first compute op depends on every gather holding it.
        std::map<std::int32_t, std::set<std::uint32_t>> holders;
        for (std::uint32_t i : g) {
          for (const ParamSlice& sl : p.param_sets[static_cast<std::size_t>(p.ops[i].params)]) holders[sl.tensor].insert(i);
        }
        std::set<std::int32_t> seen;
        for (std::uint32_t i = 0; i < p.size(); ++i) {
          const PlanOp& op = p.ops[i];
          if (op.kind != OpKind::Compute || op.params < 0) continue;
          for (const ParamSlice& sl : p.param_sets[static_cast<std::size_t>(op.params)]) {
            if (!holders.count(sl.tensor) || !seen.insert(sl.tensor).second) continue;
            const std::set<std::uint32_t> deps(p.deps_of(i), p.deps_of(i) + p.num_deps(i));
            for (std::uint32_t want : holders[sl.tensor]) {
              EXPECT_TRUE(deps.count(want)) << ahead.names[op.name] << " does not wait for " << ahead.names[p.ops[want].name];
            }
            EXPECT_NE(ahead.costs[static_cast<std::size_t>(op.cost)].phase, OpCost::Phase::BackwardWeight);
          }
        }
        EXPECT_EQ(seen.size(), holders.size()) << "every gathered tensor is used by a compute op";
      }
    }
  }
}

TEST(Plan, ModelStateAllocationsFollowZero) {
  for (int zero = 0; zero <= 3; ++zero) {
    Layout l = layout3d(4, 2, 2, 4);
    l.zero_stage = zero;
    const Plan plan = build_plan(tiny(), l, cluster(l));
    EXPECT_NO_THROW(validate(plan));
    for (int stage = 0; stage < 2; ++stage) {
      const ModelStateBytes want = rank_model_state_bytes(tiny(), l, stage);
      const auto& ops = plan.programs[static_cast<std::size_t>(stage)].ops;
      ASSERT_GE(ops.size(), 3u);
      EXPECT_EQ(ops[0].kind, OpKind::Alloc);
      EXPECT_EQ(ops[0].bytes, want.params);
      EXPECT_EQ(ops[1].bytes, want.grads);
      EXPECT_EQ(ops[2].bytes, want.optimizer);
    }
  }
}

TEST(Plan, ZeroThreeGathersEachLayerForwardAndBackward) {
  Layout l = layout3d(4, 1, 1, 2);
  l.zero_stage = 3;
  const Plan plan = build_plan(tiny(), l, cluster(l));
  auto names = count_names(plan, plan.programs[0], OpKind::Collective);
  EXPECT_EQ(names["zero3.allgather"], 8 * 2);
  EXPECT_EQ(names["zero3.allgather_bwd"], 8 * 2);
  EXPECT_EQ(names["zero3.reducescatter"], 8 * 2);
}

// Under ZeRO-3 every trainable tensor's gradient is reduce-scattered once per micro-batch, the
// embedding's, the final norm's and the head's included (they are gathered once for the iteration),
// and only after the backward op that completes it.
TEST(Plan, ZeroThreeReduceScattersEveryGradientEachMicroBatch) {
  for (int pp : {1, 2}) {
    SCOPED_TRACE("pp " + std::to_string(pp));
    Layout l = layout3d(4, 1, pp, 3);
    l.zero_stage = 3;
    const Plan plan = build_plan(tiny(), l, cluster(l));
    EXPECT_NO_THROW(validate(plan));
    for (const Program& p : plan.programs) {
      std::map<std::pair<int, std::int32_t>, std::int64_t> reduced;  // (micro-batch, tensor) -> elements
      for (std::uint32_t i = 0; i < p.size(); ++i) {
        const PlanOp& op = p.ops[i];
        if (op.kind != OpKind::Collective || op.collective != CollectiveOp::ReduceScatter || op.params < 0) continue;
        for (const ParamSlice& s : p.param_sets[static_cast<std::size_t>(op.params)]) {
          reduced[{op.micro_batch, s.tensor}] += s.elements;
          // It waits for a backward compute op that holds the tensor's gradient.
          const std::uint32_t dep = p.deps_of(i)[0];
          EXPECT_EQ(p.ops[dep].kind, OpKind::Compute);
        }
      }
      int trainable = 0;
      for (std::size_t t = 0; t < p.params.size(); ++t) {
        if (!p.params[t].trainable) continue;
        ++trainable;
        for (int mb = 0; mb < 3; ++mb) {
          const auto it = reduced.find({mb, static_cast<std::int32_t>(t)});
          ASSERT_NE(it, reduced.end()) << "tensor " << t << " (kind " << static_cast<int>(p.params[t].kind)
                                       << ") is never reduce-scattered in micro-batch " << mb;
          EXPECT_EQ(it->second, p.params[t].elements);
        }
      }
      EXPECT_EQ(reduced.size(), static_cast<std::size_t>(3 * trainable));
    }
  }
}

// Hybrid sharding (FSDP's HYBRID_SHARD): ZeRO-3 within groups of zero_shard_ranks consecutive
// data-parallel ranks, each rank's reduced gradient shard all-reduced across the groups on a stream of
// its own, in order, before the optimizer step; the model state sharded as over a data-parallel group
// of the shard group's size.
TEST(Plan, HybridShardingShardsWithinGroupsAndAllReducesAcrossThem) {
  Layout l = layout3d(4, 2, 1, 2);
  l.zero_stage = 3;
  l.zero_shard_ranks = 2;
  const Plan plan = build_plan(tiny(), l, cluster(l));
  EXPECT_NO_THROW(validate(plan));
  // Rank order (tp innermost): rank 0's Dp group is {0, 2, 4, 6}.
  EXPECT_EQ(plan.group_members(0, GroupKind::Dp), (std::vector<int>{0, 2, 4, 6}));
  EXPECT_EQ(plan.group_members(0, GroupKind::ZeroShard), (std::vector<int>{0, 2}));
  EXPECT_EQ(plan.group_members(5, GroupKind::ZeroShard), (std::vector<int>{5, 7}));
  EXPECT_EQ(plan.group_members(0, GroupKind::ZeroReplica), (std::vector<int>{0, 4}));
  EXPECT_EQ(plan.group_members(7, GroupKind::ZeroReplica), (std::vector<int>{3, 7}));

  const Program& p = plan.programs[0];
  int gathers = 0, scatters = 0;
  std::int64_t previous = -1;
  std::uint32_t last = 0;
  for (std::uint32_t i = 0; i < p.size(); ++i) {
    const PlanOp& op = p.ops[i];
    if (op.kind != OpKind::Collective || op.params < 0) continue;
    EXPECT_NE(op.group, GroupKind::Dp) << plan.names.at(op.name);
    if (op.collective == CollectiveOp::AllGather) {
      EXPECT_EQ(op.group, GroupKind::ZeroShard);
      ++gathers;
    } else if (op.collective == CollectiveOp::ReduceScatter) {
      EXPECT_EQ(op.group, GroupKind::ZeroShard);
      EXPECT_EQ(op.stream, StreamKind::Collective);
      ++scatters;
    } else {
      // The all-reduce of the shard the reduce-scatter before it produced, after it and the previous one.
      ASSERT_EQ(op.collective, CollectiveOp::AllReduce);
      EXPECT_EQ(op.group, GroupKind::ZeroReplica);
      EXPECT_EQ(op.stream, StreamKind::P2P);
      // Its set is the shard: each tensor's half, rounded up; its bytes are the set's, as for every
      // gradient collective.
      const std::vector<ParamSlice>& shard = p.param_sets[static_cast<std::size_t>(op.params)];
      EXPECT_EQ(op.bytes, set_elements(shard) * gradient_bytes_per_element(l, tiny().dtype));
      const std::set<std::uint32_t> deps(p.deps_of(i), p.deps_of(i) + p.num_deps(i));
      bool after_its_scatter = false;
      for (std::uint32_t d : deps) {
        if (p.ops[d].kind != OpKind::Collective || p.ops[d].collective != CollectiveOp::ReduceScatter) continue;
        const std::vector<ParamSlice>& whole = p.param_sets[static_cast<std::size_t>(p.ops[d].params)];
        ASSERT_EQ(whole.size(), shard.size());
        for (std::size_t k = 0; k < whole.size(); ++k) {
          EXPECT_EQ(shard[k].tensor, whole[k].tensor);
          EXPECT_EQ(shard[k].elements, (whole[k].elements + 1) / 2);
        }
        after_its_scatter = true;
      }
      EXPECT_TRUE(after_its_scatter) << plan.names.at(op.name);
      if (previous >= 0) {
        EXPECT_TRUE(deps.count(static_cast<std::uint32_t>(previous))) << plan.names.at(op.name);
      }
      previous = i;
      last = i;
    }
  }
  EXPECT_EQ(gathers, 8 * 2 * 2 + 1);  // 8 layers, forward and backward, 2 micro-batches; the embedding's once
  EXPECT_EQ(scatters, (8 + 1) * 2);   // and each micro-batch's reduce-scatters, the embedding's included
  ASSERT_GE(previous, 0);
  // The optimizer step waits for the last all-reduce.
  for (std::uint32_t i = 0; i < p.size(); ++i) {
    if (p.ops[i].span != SpanKind::Optimizer) continue;
    const std::set<std::uint32_t> deps(p.deps_of(i), p.deps_of(i) + p.num_deps(i));
    EXPECT_TRUE(deps.count(last));
  }
  // The model state: as ZeRO-3 over a data-parallel group of 2.
  Layout two = layout3d(2, 2, 1, 2);
  two.zero_stage = 3;
  EXPECT_EQ(rank_model_state_bytes(tiny(), l, 0), rank_model_state_bytes(tiny(), two, 0));
  EXPECT_EQ(p.ops[0].bytes, rank_model_state_bytes(tiny(), two, 0).params);
  EXPECT_LT(rank_model_state_bytes(tiny(), two, 0).params, rank_model_state_bytes(tiny(), layout3d(4, 2, 1, 2), 0).params);
}

// ZeRO-3's backward gather of layer j is issued before the reduce-scatter of layer j + 1's gradients
// (the collective stream runs in program order: the other way round the gather would wait for layer
// j + 1's whole backward), and depends on layer j + 1's first backward op (backward_prefetch "pre",
// FSDP's BACKWARD_PRE) or on its last, as that reduce-scatter does ("post", BACKWARD_POST).
TEST(Plan, ZeroThreeBackwardGathersComeBeforeTheReduceScatterAbove) {
  for (BackwardPrefetch prefetch : {BackwardPrefetch::Pre, BackwardPrefetch::Post}) {
    SCOPED_TRACE(backward_prefetch_name(prefetch));
    Layout l = layout3d(4, 1, 1, 2);
    l.zero_stage = 3;
    l.backward_prefetch = prefetch;
    const Plan plan = build_plan(tiny(), l, cluster(l));
    EXPECT_NO_THROW(validate(plan));
    const Program& p = plan.programs[0];
    const auto find = [&](const std::string& name, int layer, int mb) {
      for (std::uint32_t i = 0; i < p.size(); ++i) {
        const PlanOp& op = p.ops[i];
        if (op.layer == layer && op.micro_batch == mb && plan.names.at(op.name) == "l" + std::to_string(layer) + "." + name) return i;
      }
      ADD_FAILURE() << "no " << name << " of layer " << layer << ", micro-batch " << mb;
      return std::uint32_t{0};
    };
    int checked = 0;
    for (int mb = 0; mb < 2; ++mb) {
      for (int layer = 0; layer + 1 < 8; ++layer) {
        const std::uint32_t gather = find("zero3.allgather_bwd", layer, mb);
        const std::uint32_t reduce = find("zero3.reducescatter", layer + 1, mb);
        EXPECT_LT(gather, reduce) << layer;
        ASSERT_EQ(p.num_deps(gather), 1u);
        ASSERT_GE(p.num_deps(reduce), 1u);
        const std::uint32_t after = p.deps_of(gather)[0], done = p.deps_of(reduce)[0];
        EXPECT_EQ(p.ops[after].layer, layer + 1);
        EXPECT_EQ(p.ops[after].kind, OpKind::Compute);
        if (prefetch == BackwardPrefetch::Pre) {
          EXPECT_LT(after, done) << "the gather overlaps layer " << layer + 1 << "'s backward";
        } else {
          EXPECT_EQ(after, done) << "the gather waits for layer " << layer + 1 << "'s gradients";
        }
        ++checked;
      }
    }
    EXPECT_EQ(checked, 2 * 7);
  }
}

TEST(Plan, RecomputeAddsOps) {
  Layout l = layout3d(1, 1, 1, 1);
  const std::size_t none = build_plan(tiny(), l, cluster(l)).programs[0].size();
  l.recompute = Recompute::Selective;
  const std::size_t sel = build_plan(tiny(), l, cluster(l)).programs[0].size();
  l.recompute = Recompute::Full;
  const std::size_t full = build_plan(tiny(), l, cluster(l)).programs[0].size();
  EXPECT_LT(none, sel);
  EXPECT_LT(sel, full);
}

// recompute_layers (Megatron's block method): the first layers of each chunk are recomputed, keeping
// only their input; the chunk's others keep what no recomputation would, and have no recompute ops.
TEST(Plan, RecomputeLayersRecomputeEachChunksFirstLayersOnly) {
  Layout l = layout3d(1, 1, 2, 4);
  l.schedule = PipelineSchedule::Interleaved1F1B;
  l.virtual_stages = 2;  // 8 layers in 4 chunks of 2: stage 0 holds layers 0, 1 and 4, 5
  const auto per_layer = [](const Plan& plan, std::size_t stage) {
    std::map<int, std::pair<int, Bytes>> out;  // layer -> (its compute ops, its kept activations)
    for (const PlanOp& op : plan.programs[stage].ops) {
      if (op.layer < 0) continue;
      if (op.kind == OpKind::Compute) ++out[op.layer].first;
      if (op.kind == OpKind::Alloc && op.tensor_class == TensorClass::Activation) out[op.layer].second = op.bytes;
    }
    return out;
  };
  const Plan none = build_plan(tiny(), l, cluster(l));
  l.recompute = Recompute::Full;
  const Plan full = build_plan(tiny(), l, cluster(l));
  l.recompute_layers = 1;
  const Plan first = build_plan(tiny(), l, cluster(l));
  EXPECT_NO_THROW(validate(first));
  const auto all = per_layer(full, 0), kept = per_layer(none, 0), part = per_layer(first, 0);
  ASSERT_EQ(part.size(), 4u);
  const int micro_batches = 4;
  for (const auto& [layer, ops_bytes] : part) {
    const bool recomputed = layer == 0 || layer == 4;  // each chunk's first
    EXPECT_EQ(l.recomputes_layer(tiny(), layer), recomputed) << layer;
    EXPECT_EQ(ops_bytes.first, (recomputed ? all : kept).at(layer).first) << layer;
    EXPECT_EQ(ops_bytes.second, recomputed ? all.at(layer).second : kept.at(layer).second) << layer;
  }
  EXPECT_GT(all.at(0).first, kept.at(0).first);
  EXPECT_LT(all.at(0).second, kept.at(0).second);
  // Recompute ops and workspaces: half the layers' of "all".
  const auto workspaces = [](const Plan& plan) {
    int n = 0;
    for (const PlanOp& op : plan.programs[0].ops) {
      n += op.kind == OpKind::Alloc && op.tensor_class == TensorClass::Workspace && op.layer >= 0;
    }
    return n;
  };
  EXPECT_EQ(workspaces(full), 4 * micro_batches);
  EXPECT_EQ(workspaces(first), 2 * micro_batches);
  EXPECT_LT(none.programs[0].size(), first.programs[0].size());
  EXPECT_LT(first.programs[0].size(), full.programs[0].size());
}

TEST(Plan, DistributedSavedActivationsAreGatheredBeforeEachRecomputation) {
  Layout l = layout3d(1, 2, 2, 4);
  l.recompute = Recompute::Full;
  const Plan whole = build_plan(tiny(), l, cluster(l));
  l.distribute_saved_activations = true;
  const Plan split = build_plan(tiny(), l, cluster(l));
  const int layers_per_stage = 4, m = 4;
  const Bytes bsh = 1 * 128 * 256 * 2;  // tiny(): s 128, h 256, BF16; micro-batch 1
  for (std::size_t stage = 0; stage < 2; ++stage) {
    const Program& p = split.programs[stage];
    EXPECT_EQ(count(p, OpKind::Collective, GroupKind::Tp),
              count(whole.programs[stage], OpKind::Collective, GroupKind::Tp) + layers_per_stage * m);
    int gathers = 0;
    for (std::size_t i = 0; i < p.ops.size(); ++i) {
      const PlanOp& op = p.ops[i];
      if (split.names[op.name].find("recompute_input_allgather") == std::string::npos) continue;
      ++gathers;
      EXPECT_EQ(op.collective, CollectiveOp::AllGather);
      EXPECT_EQ(op.group, GroupKind::Tp);
      EXPECT_EQ(op.bytes, bsh);  // the whole layer input, gathered
      EXPECT_EQ(op.stream, StreamKind::Compute);
      // The layer's first recomputed op reads it.
      ASSERT_LT(i + 1, p.ops.size());
      const std::string next = split.names[p.ops[i + 1].name];
      EXPECT_NE(next.find("_recompute"), std::string::npos) << next;
      const std::uint32_t* deps = p.deps_of(i + 1);
      const std::uint32_t* end = deps + p.num_deps(i + 1);
      EXPECT_NE(std::find(deps, end, i), end) << next;
    }
    EXPECT_EQ(gathers, layers_per_stage * m);
    // What each layer keeps between its forward and backward: the whole input, or a t-th of it.
    for (const auto& [plan, kept] : {std::pair{&whole, bsh}, std::pair{&split, bsh / 2}}) {
      int layers = 0;
      for (const PlanOp& op : plan->programs[stage].ops) {
        if (op.kind != OpKind::Alloc || op.tensor_class != TensorClass::Activation || op.layer < 0) continue;
        ++layers;
        EXPECT_EQ(op.bytes, kept) << plan->names[op.name];
      }
      EXPECT_EQ(layers, layers_per_stage * m);
    }
    // The recomputation's workspace holds what the layer did not keep, the gathered input among it: half
    // the input more than without the split.
    const auto workspace = [](const Plan& plan, std::size_t s) {
      for (const PlanOp& op : plan.programs[s].ops)
        if (op.kind == OpKind::Alloc && op.tensor_class == TensorClass::Workspace && op.layer >= 0) return op.bytes;
      return Bytes{0};
    };
    EXPECT_GT(workspace(whole, stage), 0);
    EXPECT_EQ(workspace(split, stage), workspace(whole, stage) + bsh / 2);
  }
}

TEST(Plan, ExpertParallelAllToAll) {
  const TransformerModel moe = tiny_moe();
  Layout l = layout3d(4, 1, 1, 2);
  l.ep = 2;
  const Plan plan = build_plan(moe, l, cluster(l));
  EXPECT_NO_THROW(validate(plan));
  EXPECT_EQ(count(plan.programs[0], OpKind::Collective, GroupKind::Ep), 4 * 8 * 2);
  EXPECT_EQ(plan.group_members(3, GroupKind::Ep), (std::vector<int>{2, 3}));
  EXPECT_EQ(plan.group_members(3, GroupKind::ExpertDp), (std::vector<int>{1, 3}));
  EXPECT_GT(count(plan.programs[0], OpKind::Collective, GroupKind::ExpertDp), 0);
}

// With context parallelism the expert groups fold it in (Megatron-Core's MoE parallel folding): on dp 2 x
// cp 2 x tp 2 (rank = (dp_i·cp + cp_i)·tp + tp_i), ep 2 groups the two context ranks of a data-parallel
// replica, and each rank all-to-alls its own chunk of the sequence: b·(s/cp)·k·h elements.
TEST(Plan, ExpertParallelismFoldsContextParallelismIn) {
  const TransformerModel moe = tiny_moe();
  Layout l = layout3d(2, 2, 1, 2);
  l.cp = 2;
  l.ep = 2;
  const Plan plan = build_plan(moe, l, cluster(l));
  ASSERT_NO_THROW(validate(plan));
  EXPECT_EQ(plan.group_members(5, GroupKind::Ep), (std::vector<int>{5, 7}));       // dp 1, cp 0 and 1, tp 1
  EXPECT_EQ(plan.group_members(5, GroupKind::ExpertDp), (std::vector<int>{1, 5}));  // the same experts, tp 1
  EXPECT_EQ(plan.group_members(2, GroupKind::Cp), (std::vector<int>{0, 2}));
  const Bytes chunk = 1 * (128 / 2) * 2 * 256 * 2;  // micro-batch x s/cp x top_k x h x BF16
  int a2a = 0;
  for (const PlanOp& op : plan.programs[0].ops) {
    if (op.kind != OpKind::Collective || op.group != GroupKind::Ep) continue;
    EXPECT_EQ(op.collective, CollectiveOp::AllToAll);
    EXPECT_EQ(op.bytes, chunk);
    ++a2a;
  }
  EXPECT_EQ(a2a, 8 * 2 * 4);  // layers x micro-batches x (dispatch, combine) forward and backward
  const Layout dense_groups = [&] {
    Layout d = l;
    d.ep = 4;  // all of dp·cp
    return d;
  }();
  const Plan whole = build_plan(moe, dense_groups, cluster(dense_groups));
  EXPECT_EQ(whole.group_members(5, GroupKind::Ep), (std::vector<int>{1, 3, 5, 7}));
  EXPECT_EQ(whole.group_members(5, GroupKind::ExpertDp), (std::vector<int>{5}));
}

TEST(Plan, ValidateCatchesBrokenPlans) {
  const Layout l = layout3d(2, 2, 2, 4);
  const Plan good = build_plan(tiny(), l, cluster(l));
  {
    Plan bad = good;  // a dependency on a later op
    Program& p = bad.programs[0];
    p.deps[p.dep_begin[10]] = 20;
    ASSERT_GT(p.num_deps(10), 0u);
    EXPECT_THROW(validate(bad), InvalidArgument);
  }
  {
    Plan bad = good;  // a send whose tag nobody receives
    for (PlanOp& op : bad.programs[0].ops) {
      if (op.kind == OpKind::Send) {
        op.tag += 1000;
        break;
      }
    }
    EXPECT_THROW(validate(bad), InvalidArgument);
  }
  {
    Plan bad = good;  // a collective whose size differs between members of a group (different programs)
    bad.programs.push_back(bad.programs[0]);
    bad.program_of_rank[1] = 2;
    for (PlanOp& op : bad.programs[2].ops) {
      if (op.kind == OpKind::Collective && op.group == GroupKind::Tp) {
        op.bytes += 2;
        break;
      }
    }
    EXPECT_THROW(validate(bad), InvalidArgument);
  }
  {
    Plan bad = good;  // a free of a tensor never allocated
    PlanOp f;
    f.kind = OpKind::Free;
    f.tensor = 99999;
    bad.programs[1].add(f);
    EXPECT_THROW(validate(bad), InvalidArgument);
  }
}

TEST(Plan, BadLayoutsNameTheField) {
  auto expect_path = [](Layout l, int ranks, const std::string& path) {
    try {
      build_plan(tiny(), l, {ranks, 8});
      ADD_FAILURE() << "no error for " << path;
    } catch (const ConfigError& e) {
      EXPECT_EQ(e.path(), path) << e.what();
    }
  };
  expect_path(layout3d(2, 2, 2, 4), 16, "/layout/dp");  // product != ranks
  expect_path(layout3d(1, 3, 1, 4), 3, "/layout/tp");   // 8 heads not divisible by 3
  expect_path(layout3d(1, 1, 3, 4), 3, "/layout/pp");   // 8 layers not divisible by 3
  Layout inter = layout3d(1, 1, 2, 4);
  inter.schedule = PipelineSchedule::Interleaved1F1B;
  inter.virtual_stages = 8;
  expect_path(inter, 2, "/layout/virtual_stages");      // 8 layers not divisible by 2·8
}

namespace {

std::int64_t set_elements(const Program& p, std::int32_t set) {
  std::int64_t n = 0;
  for (const ParamSlice& s : p.param_sets.at(static_cast<std::size_t>(set))) n += s.elements;
  return n;
}

}  // namespace

TEST(Plan, ParametersAreBookedPerLayerAndMatrix) {
  const TransformerModel moe = tiny_moe();
  struct Case {
    TransformerModel model;
    Layout layout;
  };
  std::vector<Case> cases;
  for (int zero = 0; zero <= 3; ++zero) {
    Layout l = layout3d(2, 2, 2, 4);
    l.zero_stage = zero;
    cases.push_back({tiny(), l});
  }
  Layout inter = layout3d(1, 1, 2, 4);
  inter.schedule = PipelineSchedule::Interleaved1F1B;
  inter.virtual_stages = 2;
  cases.push_back({tiny(), inter});
  Layout ep = layout3d(4, 1, 2, 2);
  ep.ep = 2;
  cases.push_back({moe, ep});
  Layout folded = layout3d(2, 1, 2, 4);  // experts over dp·cp = 4
  folded.cp = 2;
  folded.ep = 4;
  folded.zero_stage = 1;
  cases.push_back({moe, folded});
  Layout split = inter;  // 8 layers + embedding + loss: chunks of 3, 2, 3, 2 layers
  split.virtual_stages = 5;
  split.embedding_in_split = split.loss_in_split = true;
  cases.push_back({tiny(), split});
  Layout context = layout3d(2, 2, 2, 4);
  context.cp = 2;
  context.zero_stage = 1;
  cases.push_back({tiny(), context});
  TransformerModel unbiased = tiny();
  unbiased.bias = false;
  cases.push_back({unbiased, layout3d(2, 2, 2, 4)});
  for (const Case& c : cases) {
    const Layout& l = c.layout;
    const Plan plan = build_plan(c.model, l, cluster(l));
    EXPECT_NO_THROW(validate(plan));
    for (int stage = 0; stage < l.pp; ++stage) {
      const Program& p = plan.programs[static_cast<std::size_t>(stage)];
      std::int64_t total = 0;
      std::map<std::int32_t, int> tensors_per_layer;
      for (const ParamTensor& t : p.params) {
        total += t.elements;
        if (t.layer >= 0) ++tensors_per_layer[t.layer];
      }
      EXPECT_EQ(total, rank_parameters(c.model, l, stage).total());
      EXPECT_EQ(model_state_of(p.params, l), rank_model_state_bytes(c.model, l, stage)) << "zero " << l.zero_stage;
      EXPECT_EQ(static_cast<std::int64_t>(tensors_per_layer.size()), l.stage_layers(c.model, stage));
      // Every GEMM with weights names one tensor: of its own layer, of the matrix its name says; so does
      // every bias gradient (of its GEMM's tensor) and LayerNorm parameter gradient.
      int weight_gemms = 0;
      for (const PlanOp& op : p.ops) {
        if (op.kind != OpKind::Compute) continue;
        const OpCost& cost = plan.costs[static_cast<std::size_t>(op.cost)];
        if (cost.name.ends_with("_bias_bwd") || cost.name.ends_with("_gamma_beta_bwd")) {
          ASSERT_GE(op.params, 0) << cost.name;
          const auto& set = p.param_sets[static_cast<std::size_t>(op.params)];
          ASSERT_EQ(set.size(), 1u) << cost.name;
          const ParamTensor& t = p.params[static_cast<std::size_t>(set[0].tensor)];
          EXPECT_EQ(t.layer, op.layer) << cost.name;
          const std::string owner = t.kind == ParamKind::Norms ? "ln" : t.kind == ParamKind::FinalNorm ? "final_ln" : to_string(t.kind);
          EXPECT_EQ(cost.name.rfind(owner, 0), 0u) << cost.name << " booked on " << to_string(t.kind);
          continue;
        }
        if (cost.kind != OpCost::Kind::Gemm) continue;
        ASSERT_GE(op.params, 0) << cost.name;
        const auto& set = p.param_sets[static_cast<std::size_t>(op.params)];
        ASSERT_EQ(set.size(), 1u) << cost.name;
        const ParamTensor& t = p.params[static_cast<std::size_t>(set[0].tensor)];
        EXPECT_EQ(t.layer, op.layer) << cost.name;
        const std::string matrix = t.kind == ParamKind::Embedding ? "lm_head" : to_string(t.kind);
        EXPECT_EQ(cost.name.rfind(matrix + "_", 0), 0u) << cost.name << " booked on " << to_string(t.kind);
        if (op.layer >= 0) {
          EXPECT_NE(plan.names[op.name].find("l" + std::to_string(op.layer) + "."), std::string::npos);
        }
        ++weight_gemms;
      }
      EXPECT_GT(weight_gemms, 0);
    }
  }
}

// Llama 3's pipeline split (Layout::embedding_in_split, loss_in_split) on 6 layers, 2 stages × 4
// one-slot chunks: stage 0 holds the embedding's chunk and layers 1, 3, 5; stage 1 layers 0, 2, 4 and
// the loss's chunk.
TEST(Plan, EmbeddingAndLossChunksCarryALayerLess) {
  Layout l = layout3d(1, 1, 2, 4);
  l.schedule = PipelineSchedule::Interleaved1F1B;
  l.virtual_stages = 4;
  l.embedding_in_split = l.loss_in_split = true;
  const Plan plan = build_plan(gpt_model("six", 6, 256, 8, 128, 1024), l, cluster(l));
  const std::vector<std::set<int>> expected{{1, 3, 5}, {0, 2, 4}};
  for (int stage = 0; stage < 2; ++stage) {
    const Program& p = plan.programs[static_cast<std::size_t>(stage)];
    std::set<int> held, computed;
    for (const ParamTensor& t : p.params) {
      if (t.layer >= 0) held.insert(t.layer);
    }
    for (const PlanOp& op : p.ops) {
      if (op.kind == OpKind::Compute && op.layer >= 0) computed.insert(op.layer);
    }
    EXPECT_EQ(held, expected[static_cast<std::size_t>(stage)]) << stage;
    EXPECT_EQ(computed, expected[static_cast<std::size_t>(stage)]) << stage;
  }
  // Stage 0's first chunk: the embedding, then the activations go straight to stage 1.
  const Program& first = plan.programs[0];
  for (const PlanOp& op : first.ops) {
    if (op.kind == OpKind::Send) break;
    if (op.kind == OpKind::Compute) {
      EXPECT_EQ(op.layer, -1) << plan.names[op.name];
    }
  }
}

TEST(Plan, GradientBucketsCoverEveryTrainableTensorOnce) {
  for (int zero : {0, 1}) {
    Layout l = layout3d(2, 2, 2, 4);
    l.zero_stage = zero;
    l.bucket_bytes = 100 * KiB;  // buckets straddle tensors
    const Plan plan = build_plan(tiny(), l, cluster(l));
    for (const Program& p : plan.programs) {
      std::vector<std::int64_t> reduced(p.params.size(), 0);
      for (const PlanOp& op : p.ops) {
        if (op.kind != OpKind::Collective || op.group != GroupKind::Dp || op.collective == CollectiveOp::AllGather) continue;
        ASSERT_GE(op.params, 0);
        EXPECT_EQ(op.bytes, 2 * set_elements(p, op.params));
        for (const ParamSlice& s : p.param_sets[static_cast<std::size_t>(op.params)]) reduced[static_cast<std::size_t>(s.tensor)] += s.elements;
      }
      for (std::size_t t = 0; t < p.params.size(); ++t) EXPECT_EQ(reduced[t], p.params[t].elements) << "tensor " << t;
    }
  }
}

TEST(Plan, HostSplitGroupsOfDataParallelism) {
  const Layout l = layout3d(4, 2, 1, 2);  // dp groups {0,2,4,6} and {1,3,5,7}
  const Plan plan = build_plan(tiny(), l, {8, 4});
  EXPECT_EQ(plan.group_members(2, GroupKind::DpIntra), (std::vector<int>{0, 2}));
  EXPECT_EQ(plan.group_members(6, GroupKind::DpIntra), (std::vector<int>{4, 6}));
  EXPECT_EQ(plan.group_members(2, GroupKind::DpInter), (std::vector<int>{2, 6}));
  EXPECT_EQ(plan.group_members(5, GroupKind::DpInter), (std::vector<int>{1, 5}));
  // Hosts holding different numbers of a group's members: no split groups.
  const Plan uneven = build_plan(tiny(), layout3d(3, 1, 1, 2), {3, 2});
  EXPECT_THROW(uneven.group_members(0, GroupKind::DpIntra), InvalidArgument);
}

// Context parallelism: rank = ((pp·dp + dp_i)·cp + cp_i)·tp + tp_i; each pass over a layer's attention
// (forward, recomputation, backward) all-gathers the whole sequence's keys and values over its Cp group
// right before its first attention op, the backward reduce-scatters their gradients right after its last;
// gradients go over dp·cp.
TEST(Plan, ContextParallelGroupsAndCollectives) {
  Layout l = layout3d(2, 2, 2, 2);  // dp 2, tp 2, pp 2
  l.cp = 2;
  l.global_batch = 4;  // 2 micro-batches per pipeline
  const TransformerModel m = tiny();  // 8 layers, h 256, 8 heads, s 128
  const Plan plan = build_plan(m, l, cluster(l, 16));
  EXPECT_EQ(plan.group_members(5, GroupKind::Tp), (std::vector<int>{4, 5}));
  EXPECT_EQ(plan.group_members(5, GroupKind::Cp), (std::vector<int>{5, 7}));
  EXPECT_EQ(plan.group_members(5, GroupKind::Dp), (std::vector<int>{1, 3, 5, 7}));
  EXPECT_EQ(plan.program_of_rank[7], 0);
  EXPECT_EQ(plan.program_of_rank[8], 1);
  const Program& p = plan.programs[0];
  const auto names = count_names(plan, p, OpKind::Collective);
  EXPECT_EQ(names.at("cp_allgather_kv"), 4 * 2);  // 4 layers × 2 micro-batches
  EXPECT_EQ(names.at("cp_allgather_kv_bwd"), 4 * 2);
  EXPECT_EQ(names.at("cp_reducescatter_dkv"), 4 * 2);
  // Each right beside the attention ops of its pass.
  for (std::size_t i = 0; i + 1 < p.ops.size(); ++i) {
    const PlanOp& op = p.ops[i];
    if (op.kind != OpKind::Collective || op.group != GroupKind::Cp) continue;
    const PlanOp& beside = op.collective == CollectiveOp::AllGather ? p.ops[i + 1] : p.ops[i - 1];
    ASSERT_EQ(beside.kind, OpKind::Compute);
    EXPECT_EQ(plan.costs[static_cast<std::size_t>(beside.cost)].kind, OpCost::Kind::Attention) << plan.names[op.name];
  }
  const Bytes kv = 2 * 128 * (2 * 256) / 2;  // K and V of the whole sequence on 4 of 8 heads, 2 bytes
  for (const PlanOp& op : p.ops) {
    if (op.kind == OpKind::Collective && op.group == GroupKind::Cp) {
      EXPECT_EQ(op.bytes, kv);
    }
    if (op.kind == OpKind::Send) {
      EXPECT_EQ(op.bytes, 128 / 2 * 256 * 2 / 2);  // this rank's half of the sequence, a t-th of it
    }
  }
  // Heads of 64 (head_dim) at h = 256 with 2 key/value heads: K and V are 2 × 64 wide each, one head of
  // each on a rank of tp 2.
  TransformerModel wide = m;
  wide.head_dim = 64;
  wide.kv_heads = 2;
  const Plan wide_plan = build_plan(wide, l, cluster(l, 16));
  for (const PlanOp& op : wide_plan.programs[0].ops) {
    if (op.kind == OpKind::Collective && op.group == GroupKind::Cp) {
      EXPECT_EQ(op.bytes, 2 * 128 * (2 * 2 * 64) / 2);
    }
  }
  for (const ParamTensor& t : wide_plan.programs[0].params) {  // the projection's h rows of a·d/t columns
    if (t.kind == ParamKind::Proj) {
      EXPECT_EQ(t.cols, 8 * 64 / 2);
    }
  }
  for (Recompute r : {Recompute::Selective, Recompute::Full}) {  // the recomputation gathers once more
    l.recompute = r;
    EXPECT_EQ(count(build_plan(m, l, cluster(l, 16)).programs[0], OpKind::Collective, GroupKind::Cp), 4 * 4 * 2);
  }
  // The gradient buckets all-reduce over the 4 ranks of dp·cp.
  for (const PlanOp& op : p.ops) {
    if (op.kind == OpKind::Collective && op.group == GroupKind::Dp) {
      EXPECT_EQ(op.collective, CollectiveOp::AllReduce);
    }
  }
  EXPECT_GT(count(p, OpKind::Collective, GroupKind::Dp), 0);
}

// The ring (cp_comm "p2p"): each pass's exchange of K and V on the Cp communicator's own stream (P2P),
// issued after the op before the attention; the ring's first step runs beside it without waiting, its
// other steps wait for it; the backward's gradients come back after the last step on the compute stream.
TEST(Plan, ContextParallelRingOverlapsTheFirstStepWithTheExchange) {
  Layout l = layout3d(2, 2, 2, 2);
  l.cp = 2;
  l.global_batch = 4;
  l.cp_comm = CpComm::P2P;
  TransformerModel m = tiny();
  m.attention = AttentionImpl::Flash2;
  l.recompute = Recompute::Selective;
  const Plan plan = build_plan(m, l, cluster(l, 16));
  const Program& p = plan.programs[0];
  const auto name_of = [&](const PlanOp& op) { return plan.names[op.name]; };
  const auto depends = [&](std::size_t i, std::size_t on) {
    return std::find(p.deps_of(i), p.deps_of(i) + p.num_deps(i), static_cast<std::uint32_t>(on)) != p.deps_of(i) + p.num_deps(i);
  };
  int gathers = 0, reductions = 0;
  for (std::size_t i = 0; i < p.ops.size(); ++i) {
    const PlanOp& op = p.ops[i];
    if (op.kind != OpKind::Collective || op.group != GroupKind::Cp) continue;
    if (op.collective == CollectiveOp::ReduceScatter) {
      ++reductions;
      EXPECT_EQ(op.stream, StreamKind::Compute);
      EXPECT_TRUE(name_of(p.ops[i - 1]).ends_with("flash_attn_ring_bwd")) << name_of(p.ops[i - 1]);
      continue;
    }
    ++gathers;
    EXPECT_EQ(op.stream, StreamKind::P2P) << name_of(op);
    // The next two ops: the ring's first step, not waiting for it; then its other steps, waiting.
    ASSERT_LT(i + 2, p.ops.size());
    const std::string first = name_of(p.ops[i + 1]), rest = name_of(p.ops[i + 2]);
    EXPECT_NE(first.find("flash_attn_"), std::string::npos) << first;
    EXPECT_EQ(first.find("flash_attn_ring"), std::string::npos) << first;
    EXPECT_NE(rest.find("flash_attn_ring_"), std::string::npos) << rest;
    EXPECT_FALSE(depends(i + 1, i)) << first;
    EXPECT_TRUE(depends(i + 2, i)) << rest;
  }
  EXPECT_EQ(gathers, 4 * 2 * 3);  // 4 layers × 2 micro-batches × forward, recomputation and backward
  EXPECT_EQ(reductions, 4 * 2);
  // The same bytes as the all-gather's.
  Layout gathered = l;
  gathered.cp_comm = CpComm::AllGather;
  Bytes ring_bytes = 0, gather_bytes = 0;
  for (const PlanOp& op : p.ops) ring_bytes += op.kind == OpKind::Collective && op.group == GroupKind::Cp ? op.bytes : 0;
  const Plan gathered_plan = build_plan(m, gathered, cluster(l, 16));
  for (const PlanOp& op : gathered_plan.programs[0].ops) {
    gather_bytes += op.kind == OpKind::Collective && op.group == GroupKind::Cp ? op.bytes : 0;
  }
  EXPECT_EQ(ring_bytes, gather_bytes);
}

TEST(GradientBuckets, PackInReadyOrderAndStraddleTensors) {
  const std::vector<GradientReady> ready = {{5, 0, 30}, {9, 1, 50}, {12, 2, 10}};
  const auto buckets = gradient_buckets(ready, 80, 2);  // 40 elements per bucket
  ASSERT_EQ(buckets.size(), 3u);
  EXPECT_EQ(buckets[0], (GradientBucket{9, 40, {{0, 30}, {1, 10}}}));
  EXPECT_EQ(buckets[1], (GradientBucket{9, 40, {{1, 40}}}));
  EXPECT_EQ(buckets[2], (GradientBucket{12, 10, {{2, 10}}}));
  EXPECT_TRUE(gradient_buckets({}, 80, 2).empty());
}
