// The builder's tensor-parallel backward of the column-parallel GEMMs (QKV, FC1) as Megatron-LM issues
// it (plan_builder.cpp, ColumnBackward), the data-parallel buckets issued in backward order, the
// gradient dtype of the layout, and what an FP8 model's ranks send each other.
#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <utility>
#include <vector>

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

ClusterShape cluster(const Layout& l) { return {l.world_size(), 8}; }

const std::string& name_of(const Plan& plan, const PlanOp& op) { return plan.names.at(op.name); }

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// Whether op `a` of `p` can only start after op `b` has finished: a path of explicit dependencies and
// FIFO stream order (plan.hpp: an op on the Compute or Collective stream follows the previous op of its
// stream) from b to a.
bool waits_for(const Program& p, std::uint32_t a, std::uint32_t b) {
  if (a <= b) return false;
  std::vector<char> seen(a + 1, 0);
  std::vector<std::uint32_t> todo{a};
  while (!todo.empty()) {
    const std::uint32_t i = todo.back();
    todo.pop_back();
    if (i == b) return true;
    if (i < b || seen[i]) continue;
    seen[i] = 1;
    for (std::size_t k = 0; k < p.num_deps(i); ++k) todo.push_back(p.deps_of(i)[k]);
    if (p.ops[i].stream != StreamKind::P2P) {
      for (std::uint32_t j = i; j-- > 0;) {
        if (p.ops[j].stream == p.ops[i].stream) {
          todo.push_back(j);
          break;
        }
      }
    }
  }
  return false;
}

bool has_dep(const Program& p, std::uint32_t a, std::uint32_t b) {
  for (std::size_t k = 0; k < p.num_deps(a); ++k) {
    if (p.deps_of(a)[k] == b) return true;
  }
  return false;
}

// One column-parallel GEMM's backward in a program: its dgrad, wgrad, the op after the wgrad, and the
// collectives named after it (-1 when absent).
struct ColumnOps {
  std::int64_t gather = -1, dgrad = -1, reduce = -1, wgrad = -1, next = -1;
};

// Every backward of `gemm` ("qkv" or "fc1") in program order, with the collectives the builder puts
// between its dgrad and its wgrad.
std::vector<ColumnOps> column_backwards(const Plan& plan, const Program& p, const std::string& gemm, bool sp) {
  std::vector<ColumnOps> out;
  for (std::uint32_t i = 0; i < p.size(); ++i) {
    if (!ends_with(name_of(plan, p.ops[i]), "." + gemm + "_dgrad")) continue;
    ColumnOps c;
    c.dgrad = i;
    // The all-gather is issued right before the dgrad (SP).
    if (sp && i > 0 && ends_with(name_of(plan, p.ops[i - 1]), ".tp_allgather_wgrad")) c.gather = i - 1;
    for (std::uint32_t j = i + 1; j < p.size(); ++j) {
      const std::string& n = name_of(plan, p.ops[j]);
      if (ends_with(n, sp ? ".tp_reducescatter_bwd" : ".tp_allreduce_bwd") && c.reduce < 0) c.reduce = j;
      if (ends_with(n, "." + gemm + "_wgrad")) {
        c.wgrad = j;
        for (std::uint32_t k = j + 1; k < p.size(); ++k) {
          if (p.ops[k].kind == OpKind::Compute) {
            c.next = k;
            break;
          }
        }
        break;
      }
    }
    out.push_back(c);
  }
  return out;
}

}  // namespace

// With sequence parallelism every QKV and FC1 backward re-gathers its sequence-split input for the
// weight gradient (Megatron does not keep the forward's gathered copy): an all-gather of the whole
// b·s·h array over the tensor group, asynchronous (the P2P stream: ordered by its dependencies only),
// issued before the input-gradient GEMM and not waiting for it; the weight-gradient GEMM waits for it.
TEST(PlanBuilderTp, SequenceParallelBackwardRegathersTheColumnParallelInputs) {
  Layout l = layout3d(1, 2, 2, 4);
  l.sequence_parallel = true;
  const Plan plan = build_plan(tiny(), l, cluster(l));
  const int layers_per_stage = 4, micro_batches = 4;
  const Bytes gathered = l.micro_batch * 128 * 256 * 2;  // b·s·h, bf16
  for (const Program& p : plan.programs) {
    int gathers = 0;
    for (const PlanOp& op : p.ops) {
      if (!ends_with(name_of(plan, op), ".tp_allgather_wgrad")) continue;
      ++gathers;
      EXPECT_EQ(op.kind, OpKind::Collective);
      EXPECT_EQ(op.collective, CollectiveOp::AllGather);
      EXPECT_EQ(op.group, GroupKind::Tp);
      EXPECT_EQ(op.stream, StreamKind::P2P);
      EXPECT_EQ(op.bytes, gathered);
      EXPECT_GE(op.layer, 0);
      EXPECT_GE(op.micro_batch, 0);
    }
    EXPECT_EQ(gathers, 2 * layers_per_stage * micro_batches);
    for (const char* gemm : {"qkv", "fc1"}) {
      const std::vector<ColumnOps> cols = column_backwards(plan, p, gemm, true);
      ASSERT_EQ(cols.size(), static_cast<std::size_t>(layers_per_stage * micro_batches)) << gemm;
      for (const ColumnOps& c : cols) {
        ASSERT_GE(c.gather, 0) << gemm;
        ASSERT_GE(c.reduce, 0) << gemm;
        ASSERT_GE(c.wgrad, 0) << gemm;
        ASSERT_GE(c.next, 0) << gemm;
        const auto g = static_cast<std::uint32_t>(c.gather), d = static_cast<std::uint32_t>(c.dgrad),
                   r = static_cast<std::uint32_t>(c.reduce), w = static_cast<std::uint32_t>(c.wgrad),
                   n = static_cast<std::uint32_t>(c.next);
        EXPECT_EQ(p.ops[g].layer, p.ops[d].layer);
        EXPECT_EQ(p.ops[g].micro_batch, p.ops[d].micro_batch);
        EXPECT_FALSE(waits_for(p, g, d)) << gemm << ": the all-gather overlaps the input-gradient GEMM";
        EXPECT_TRUE(has_dep(p, w, g)) << gemm << ": the weight gradient reads the gathered input";
        EXPECT_TRUE(has_dep(p, r, d)) << gemm << ": the reduce-scatter sends the input gradient";
        EXPECT_TRUE(has_dep(p, r, g)) << gemm << ": Megatron waits for the all-gather before issuing it";
        EXPECT_EQ(p.ops[r].stream, StreamKind::P2P);
        EXPECT_EQ(p.ops[r].collective, CollectiveOp::ReduceScatter);
        EXPECT_EQ(p.ops[r].bytes, gathered);
        EXPECT_FALSE(waits_for(p, w, r)) << gemm << ": the weight gradient overlaps the reduce-scatter";
        EXPECT_TRUE(has_dep(p, n, r)) << gemm << ": the LayerNorm backward consumes the input gradient";
        EXPECT_TRUE(ends_with(name_of(plan, p.ops[n]), "_bwd")) << name_of(plan, p.ops[n]);
      }
    }
  }
  EXPECT_NO_THROW(validate(plan));
}

// Without sequence parallelism the input gradient's all-reduce runs asynchronously beside the
// weight-gradient GEMM (Megatron's async tensor-parallel all-reduce), and nothing is re-gathered.
TEST(PlanBuilderTp, InputGradientAllReduceOverlapsTheWeightGradient) {
  const Layout l = layout3d(2, 2, 1, 2);
  const Plan plan = build_plan(tiny(), l, cluster(l));
  const Program& p = plan.programs[0];
  for (const PlanOp& op : p.ops) EXPECT_FALSE(ends_with(name_of(plan, op), ".tp_allgather_wgrad"));
  for (const char* gemm : {"qkv", "fc1"}) {
    const std::vector<ColumnOps> cols = column_backwards(plan, p, gemm, false);
    ASSERT_EQ(cols.size(), 8u * 2u) << gemm;
    for (const ColumnOps& c : cols) {
      ASSERT_GE(c.reduce, 0) << gemm;
      ASSERT_GE(c.wgrad, 0) << gemm;
      ASSERT_GE(c.next, 0) << gemm;
      const auto d = static_cast<std::uint32_t>(c.dgrad), r = static_cast<std::uint32_t>(c.reduce),
                 w = static_cast<std::uint32_t>(c.wgrad), n = static_cast<std::uint32_t>(c.next);
      EXPECT_EQ(p.ops[r].collective, CollectiveOp::AllReduce);
      EXPECT_EQ(p.ops[r].stream, StreamKind::P2P);
      EXPECT_EQ(p.ops[r].bytes, 128 * 256 * 2);
      EXPECT_TRUE(has_dep(p, r, d));
      EXPECT_TRUE(has_dep(p, w, d));
      EXPECT_FALSE(waits_for(p, w, r)) << gemm << ": the weight gradient overlaps the all-reduce";
      EXPECT_TRUE(has_dep(p, n, r));
    }
  }
  // The row-parallel GEMMs' collectives stay where the next op needs them at once: forward
  // all-reduces on the compute stream.
  for (const PlanOp& op : p.ops) {
    if (op.kind == OpKind::Collective && op.group == GroupKind::Tp && ends_with(name_of(plan, op), ".tp_allreduce")) {
      EXPECT_EQ(op.stream, StreamKind::Compute);
    }
  }
  EXPECT_NO_THROW(validate(plan));
}

// The asynchronous TP collectives keep their communicator's stream order: each depends on the one
// issued before it, so a rank has at most one in flight and every member issues them in one order.
TEST(PlanBuilderTp, AsynchronousCollectivesFollowEachOther) {
  for (bool sp : {false, true}) {
    Layout l = layout3d(2, 2, 2, 4);
    l.sequence_parallel = sp;
    l.schedule = PipelineSchedule::Interleaved1F1B;
    l.virtual_stages = 2;
    const Plan plan = build_plan(tiny(), l, cluster(l));
    for (const Program& p : plan.programs) {
      std::int64_t previous = -1;
      int n = 0;
      for (std::uint32_t i = 0; i < p.size(); ++i) {
        const PlanOp& op = p.ops[i];
        if (op.kind != OpKind::Collective || op.stream != StreamKind::P2P) continue;
        EXPECT_EQ(op.group, GroupKind::Tp);
        if (previous >= 0) {
          EXPECT_TRUE(has_dep(p, i, static_cast<std::uint32_t>(previous))) << name_of(plan, op);
        }
        previous = i;
        ++n;
      }
      EXPECT_EQ(n, (sp ? 4 : 2) * 4 * 4) << "sp " << sp;  // per layer and micro-batch; 4 layers per stage
    }
    EXPECT_NO_THROW(validate(plan));
  }
}

// Memory: the re-gathered input lives in Megatron's global buffer, which the plan counts in neither
// pass: sequence parallelism adds collectives but no tensors.
TEST(PlanBuilderTp, RegatheringAddsNoTensors) {
  Layout l = layout3d(1, 2, 1, 2);
  const Plan plain = build_plan(tiny(), l, cluster(l));
  l.sequence_parallel = true;
  const Plan sp = build_plan(tiny(), l, cluster(l));
  auto allocs = [](const Program& p) {
    int n = 0;
    for (const PlanOp& op : p.ops) n += op.kind == OpKind::Alloc;
    return n;
  };
  EXPECT_EQ(allocs(sp.programs[0]), allocs(plain.programs[0]));
}

// Overlapped data-parallel buckets are issued in program order right after the op that completes
// them (as DDP's hooks issue them), not after the whole backward: no compute op comes between.
TEST(PlanBuilderTp, OverlappedBucketsAreIssuedWhereTheirGradientsComplete) {
  Layout l = layout3d(2, 2, 2, 4);
  l.sequence_parallel = true;
  l.bucket_bytes = 64 * KiB;
  const Plan plan = build_plan(tiny(), l, cluster(l));
  for (const Program& p : plan.programs) {
    int buckets = 0;
    for (std::uint32_t i = 0; i < p.size(); ++i) {
      const PlanOp& op = p.ops[i];
      if (op.kind != OpKind::Collective || op.group != GroupKind::Dp || op.tensor_class != TensorClass::Grads) continue;
      ++buckets;
      ASSERT_EQ(p.num_deps(i), 1u);
      const std::uint32_t ready = p.deps_of(i)[0];
      for (std::uint32_t j = ready + 1; j < i; ++j) {
        EXPECT_NE(p.ops[j].kind, OpKind::Compute) << name_of(plan, op) << " issued after " << name_of(plan, p.ops[j]);
      }
    }
    EXPECT_GT(buckets, 2);
  }
  EXPECT_NO_THROW(validate(plan));
}

// grad_dtype fp32: every data-parallel gradient reduction moves 4 bytes per gradient, and the gradient
// buffers hold 4 bytes each (model_state_of = rank_model_state_bytes).
TEST(PlanBuilderTp, Fp32GradientsDoubleTheReducedBytes) {
  for (int zero : {0, 1, 3}) {
    Layout l = layout3d(4, 1, 2, 4);
    l.zero_stage = zero;
    l.bucket_bytes = 1 * MiB;
    const Plan bf16 = build_plan(tiny(), l, cluster(l));
    l.grad_dtype = GradDtype::FP32;
    const Plan fp32 = build_plan(tiny(), l, cluster(l));
    for (int stage = 0; stage < 2; ++stage) {
      auto reduced = [&](const Plan& plan) {
        Bytes sum = 0;
        for (const PlanOp& op : plan.programs[static_cast<std::size_t>(stage)].ops) {
          if (op.kind == OpKind::Collective && op.tensor_class == TensorClass::Grads) sum += op.bytes;
        }
        return sum;
      };
      EXPECT_GT(reduced(bf16), 0) << "zero " << zero;
      EXPECT_EQ(reduced(fp32), 2 * reduced(bf16)) << "zero " << zero << " stage " << stage;
      const Program& p = fp32.programs[static_cast<std::size_t>(stage)];
      EXPECT_EQ(model_state_of(p.params, l), rank_model_state_bytes(tiny(), l, stage));
      EXPECT_EQ(model_state_of(p.params, l).grads,
                2 * model_state_of(bf16.programs[static_cast<std::size_t>(stage)].params, bf16.layout).grads);
    }
  }
}

// An FP8 model (Transformer Engine's recipe, model.hpp) computes its linear GEMMs in FP8 but keeps BF16
// activations and 16-bit weights: its pipeline messages, reduce-scatters, gradient reductions and model
// state are a BF16 model's. Its SP all-gathers of what the FP8 GEMMs read (the LayerNorms' outputs,
// forward and again for the weight gradient; the row-parallel GEMMs' output gradients) carry FP8: half.
TEST(PlanBuilderTp, Fp8ModelsMoveWhatBf16ModelsMoveButGatherFp8) {
  Layout l = layout3d(2, 2, 2, 4);
  l.sequence_parallel = true;
  l.zero_stage = 1;
  TransformerModel fp8 = tiny();
  fp8.dtype = DType::FP8;
  const Plan a = build_plan(fp8, l, cluster(l)), b = build_plan(tiny(), l, cluster(l));
  ASSERT_EQ(a.programs.size(), b.programs.size());
  for (std::size_t r = 0; r < a.programs.size(); ++r) {
    // Activation allocations and compute ops differ; what moves between ranks is listed in order.
    const auto moved = [](const Plan& plan, const Program& p) {
      std::vector<std::tuple<OpKind, std::string, Bytes>> out;
      for (const PlanOp& op : p.ops) {
        if (op.kind == OpKind::Send || op.kind == OpKind::Recv || op.kind == OpKind::Collective) {
          out.emplace_back(op.kind, name_of(plan, op), op.bytes);
        }
      }
      return out;
    };
    const auto x = moved(a, a.programs[r]), y = moved(b, b.programs[r]);
    ASSERT_EQ(x.size(), y.size());
    int gathers = 0, others = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      const auto& [kind, name, bytes] = x[i];
      ASSERT_EQ(name, std::get<1>(y[i]));
      const bool fp8_gather = ends_with(name, "tp_allgather") || ends_with(name, "tp_allgather_bwd") ||
                              ends_with(name, "tp_allgather_wgrad");
      (fp8_gather ? gathers : others) += 1;
      EXPECT_EQ(bytes * (fp8_gather ? 2 : 1), std::get<2>(y[i])) << name;
    }
    EXPECT_GT(gathers, 0);
    EXPECT_GT(others, 0);
    EXPECT_EQ(model_state_of(a.programs[r].params, l), model_state_of(b.programs[r].params, l)) << "rank " << r;
  }
}

namespace {

// The ops of `p` in its layers whose names end in `suffix` ("." and the op's name), in program order
// (not the embedding's: its output's reduce-scatter is no userbuffers GEMM's).
std::vector<std::uint32_t> named(const Plan& plan, const Program& p, const std::string& suffix) {
  std::vector<std::uint32_t> out;
  for (std::uint32_t i = 0; i < p.size(); ++i) {
    if (p.ops[i].layer >= 0 && ends_with(name_of(plan, p.ops[i]), suffix)) out.push_back(i);
  }
  return out;
}

// The whole of GEMM `name` in a layer of `m` under `l` (its forward or backward op list).
OpCost whole_gemm(const TransformerModel& m, const Layout& l, const std::string& name) {
  for (const auto& ops : {layer_forward_ops(m, l.op_context()), layer_backward_ops(m, l.op_context())}) {
    for (const OpCost& op : ops) {
      if (op.name == name) return op;
    }
  }
  ADD_FAILURE() << "no op " << name;
  return {};
}

}  // namespace

// FP8 current scaling (Fp8Recipe::Current) under sequence parallelism: before each FP8 gather of a
// shard (QKV's and FC1's inputs forward, the projection's and FC2's output gradients backward) the
// tensor group all-reduces the shards' amax, 4 bytes, in line on the compute stream: the gather waits
// for it. Its recomputation reduces again; with userbuffers the gathers are the split GEMMs' and the
// reductions stay. Delayed scaling, BF16, or no sequence parallelism: none.
TEST(PlanBuilderTp, CurrentScalingReducesTheShardsAmaxBeforeEachFp8Gather) {
  Layout l = layout3d(1, 2, 2, 4);
  l.sequence_parallel = true;
  const std::size_t passes = 4 * 4;  // layers per stage x micro-batches
  TransformerModel m = tiny();
  m.dtype = DType::FP8;
  m.fp8_recipe = Fp8Recipe::Current;
  const auto amax_ops = [](const Plan& plan, const Program& p) {
    return std::pair{named(plan, p, ".tp_amax_allreduce").size(), named(plan, p, ".tp_amax_allreduce_bwd").size()};
  };
  const Plan plan = build_plan(m, l, cluster(l));
  ASSERT_NO_THROW(validate(plan));
  for (const Program& p : plan.programs) {
    EXPECT_EQ(amax_ops(plan, p), std::pair(2 * passes, 2 * passes));
    for (const char* suffix : {".tp_amax_allreduce", ".tp_amax_allreduce_bwd"}) {
      for (std::uint32_t i : named(plan, p, suffix)) {
        const PlanOp& op = p.ops[i];
        EXPECT_EQ(op.collective, CollectiveOp::AllReduce);
        EXPECT_EQ(op.group, GroupKind::Tp);
        EXPECT_EQ(op.stream, StreamKind::Compute);
        EXPECT_EQ(op.bytes, 4);
      }
    }
    // The op before each gather on the compute stream is an amax reduction of its layer and micro-batch.
    for (const auto& [gather, amax] : {std::pair{".tp_allgather", ".tp_amax_allreduce"},
                                       std::pair{".tp_allgather_bwd", ".tp_amax_allreduce_bwd"}}) {
      const std::vector<std::uint32_t> gathers = named(plan, p, gather);
      EXPECT_EQ(gathers.size(), 2 * passes) << gather;
      for (std::uint32_t g : gathers) {
        std::uint32_t before = g - 1;
        while (before > 0 && p.ops[before].stream != StreamKind::Compute) --before;
        EXPECT_TRUE(ends_with(name_of(plan, p.ops[before]), amax)) << name_of(plan, p.ops[before]);
        EXPECT_EQ(p.ops[before].layer, p.ops[g].layer);
        EXPECT_EQ(p.ops[before].micro_batch, p.ops[g].micro_batch);
      }
    }
  }
  Layout recompute = l;
  recompute.recompute = Recompute::Full;
  const Plan again = build_plan(m, recompute, cluster(recompute));
  EXPECT_EQ(named(again, again.programs[0], ".recompute.tp_amax_allreduce").size(), 2 * passes);
  EXPECT_EQ(amax_ops(again, again.programs[0]), std::pair(4 * passes, 2 * passes));
  Layout ub = l;
  ub.tp_comm_overlap = true;
  const Plan overlapped = build_plan(m, ub, cluster(ub));
  EXPECT_TRUE(named(overlapped, overlapped.programs[0], ".tp_allgather").empty());
  EXPECT_EQ(amax_ops(overlapped, overlapped.programs[0]), std::pair(2 * passes, 2 * passes));

  TransformerModel delayed = m;
  delayed.fp8_recipe = Fp8Recipe::Delayed;
  Layout no_sp = l;
  no_sp.sequence_parallel = false;
  for (const auto& [model, layout] : {std::pair{delayed, l}, std::pair{tiny(), l}, std::pair{m, no_sp}}) {
    const Plan none = build_plan(model, layout, cluster(layout));
    EXPECT_EQ(amax_ops(none, none.programs[0]), std::pair(std::size_t{0}, std::size_t{0}));
  }
}

// With sequence parallelism the projection's and FC2's input-gradient GEMMs read their output gradient
// all-gathered over the tensor group, a gather in line before that GEMM's backward: after the residual
// add's backward where dropout gives it one, and still there where a model without dropout has none
// (TransformerModel::dropout; model.hpp). Each layer and micro-batch gathers twice, FC2's input
// gradient waits for one of its gathers and the projection's for both.
TEST(PlanBuilderTp, OutputGradientGathersPrecedeTheRowParallelBackwardWithOrWithoutDropout) {
  Layout l = layout3d(1, 2, 2, 4);
  l.sequence_parallel = true;
  const std::size_t passes = 4 * 4;  // layers per stage x micro-batches
  TransformerModel m = tiny();
  for (bool dropout : {true, false}) {
    SCOPED_TRACE(dropout ? "dropout" : "no dropout");
    m.dropout = dropout;
    const Plan plan = build_plan(m, l, cluster(l));
    for (const Program& p : plan.programs) {
      const std::vector<std::uint32_t> gathers = named(plan, p, ".tp_allgather_bwd");
      EXPECT_EQ(gathers.size(), 2 * passes);
      EXPECT_EQ(named(plan, p, "_residual_bwd").size(), dropout ? 2 * passes : 0u);
      for (const auto& [gemm, expected] : {std::pair{".fc2_dgrad", 1}, std::pair{".proj_dgrad", 2}}) {
        const std::vector<std::uint32_t> dgrads = named(plan, p, gemm);
        ASSERT_EQ(dgrads.size(), passes) << gemm;
        for (std::uint32_t dg : dgrads) {
          int waited = 0;
          for (std::uint32_t g : gathers) {
            const PlanOp& op = p.ops[g];
            EXPECT_EQ(op.collective, CollectiveOp::AllGather);
            EXPECT_EQ(op.stream, StreamKind::Compute);
            if (op.layer == p.ops[dg].layer && op.micro_batch == p.ops[dg].micro_batch && waits_for(p, dg, g)) ++waited;
          }
          EXPECT_EQ(waited, expected) << gemm;
        }
      }
    }
    EXPECT_NO_THROW(validate(plan));
  }
}

// Transformer Engine's userbuffers (Layout::tp_comm_overlap, plan_builder.cpp): QKV's and FC1's
// forward, and the projection's and FC2's input gradient, run in tp chunks of their tokens beside a
// ring exchange — the first chunk on the rank's own shard, each further one after the copy-engine step
// that brings the next shard (a ring all-gather of a shard per rank, gathered/(tp − 1) bytes, each step
// after the last); the weight gradient after a split input gradient reads the whole gathered array.
// The projection's and FC2's forward run in 4 chunks, each chunk's output reduce-scattered (a quarter
// of the array, on SMs: no copy engine) after it and after the previous piece, the residual add after
// the last. No sequence-parallel collective stays on the compute stream between those ops, and the
// chunks' FLOPs are the whole's. On 4 ranks of TP (one stage, 2 micro-batches, 8 layers).
TEST(PlanBuilderTp, CommOverlapSplitsTheGemmsBesideTheSequenceParallelCollectives) {
  const int tp = 4, layers = 8, micro_batches = 2;
  Layout l = layout3d(1, tp, 1, micro_batches);
  l.sequence_parallel = true;
  l.tp_comm_overlap = true;
  const Plan plan = build_plan(tiny(), l, cluster(l));
  ASSERT_NO_THROW(validate(plan));
  ASSERT_EQ(plan.programs.size(), 1u);
  const Program& p = plan.programs[0];
  const Bytes gathered = 128 * 256 * 2;  // b·s·h, bf16
  const Bytes step_bytes = (gathered + tp - 2) / (tp - 1);
  EXPECT_GE((tp - 1) * step_bytes, gathered);  // the steps move a whole all-gather's shards, no more
  EXPECT_LT((tp - 1) * step_bytes, gathered + tp - 1);
  for (const char* gone : {".tp_allgather", ".tp_reducescatter", ".tp_allgather_bwd"}) {
    EXPECT_TRUE(named(plan, p, gone).empty()) << gone;
  }
  const int passes = layers * micro_batches;

  // Ring exchanges: QKV and FC1 forward, the projection's and FC2's input gradient.
  for (const auto& [gemm, step_name] : {std::pair{"qkv_fwd", ".tp_ring_allgather"}, std::pair{"fc1_fwd", ".tp_ring_allgather"},
                                        std::pair{"proj_dgrad", ".tp_ring_allgather_bwd"},
                                        std::pair{"fc2_dgrad", ".tp_ring_allgather_bwd"}}) {
    const std::vector<std::uint32_t> chunks = named(plan, p, std::string(".") + gemm);
    ASSERT_EQ(chunks.size(), static_cast<std::size_t>(tp * passes)) << gemm;
    const OpCost whole = whole_gemm(tiny(), l, gemm);
    for (std::size_t c = 0; c < chunks.size(); ++c) {
      const std::uint32_t i = chunks[c];
      const OpCost& cost = plan.costs[static_cast<std::size_t>(p.ops[i].cost)];
      EXPECT_EQ(cost.m, whole.m / tp) << gemm;
      EXPECT_EQ(cost.split, tp) << gemm;
      EXPECT_EQ(cost.n, whole.n);
      EXPECT_EQ(cost.k, whole.k);
      EXPECT_DOUBLE_EQ(cost.flops * tp, whole.flops);
      if (c % tp == 0) continue;  // the rank's own shard: no step before it
      const PlanOp& step = p.ops[i - 1];
      ASSERT_TRUE(ends_with(name_of(plan, step), step_name)) << gemm << ": " << name_of(plan, step);
      EXPECT_EQ(step.kind, OpKind::Collective);
      EXPECT_EQ(step.collective, CollectiveOp::AllGather);
      EXPECT_EQ(step.group, GroupKind::Tp);
      EXPECT_EQ(step.stream, StreamKind::P2P);
      EXPECT_TRUE(step.copy_engine);
      EXPECT_EQ(step.bytes, step_bytes);
      EXPECT_TRUE(has_dep(p, i, i - 1)) << gemm << ": the chunk runs on the shard the step brought";
      if (c % tp > 1) {
        EXPECT_TRUE(has_dep(p, i - 1, i - 3)) << gemm << ": each step after the last";
      }
      EXPECT_FALSE(waits_for(p, i - 1, i - 2)) << gemm << ": the step overlaps the chunk before";
    }
    EXPECT_EQ(named(plan, p, step_name).size(), static_cast<std::size_t>(2 * (tp - 1) * passes));
  }
  // The weight gradients of the split input gradients read the whole gathered output gradient.
  for (const char* gemm : {"proj", "fc2"}) {
    const std::vector<std::uint32_t> dgrads = named(plan, p, std::string(".") + gemm + "_dgrad");
    const std::vector<std::uint32_t> wgrads = named(plan, p, std::string(".") + gemm + "_wgrad");
    ASSERT_EQ(wgrads.size(), static_cast<std::size_t>(passes));
    for (std::size_t w = 0; w < wgrads.size(); ++w) {
      const std::uint32_t last_chunk = dgrads[w * tp + tp - 1];
      EXPECT_TRUE(has_dep(p, wgrads[w], last_chunk - 1)) << gemm << ": the last step";
    }
  }

  // Pipelines: the projection's and FC2's forward, 4 chunks, a reduce-scatter after each.
  for (const auto& [gemm, after] : {std::pair{"proj_fwd", "attn_residual_fwd"}, std::pair{"fc2_fwd", "mlp_residual_fwd"}}) {
    const std::vector<std::uint32_t> chunks = named(plan, p, std::string(".") + gemm);
    ASSERT_EQ(chunks.size(), static_cast<std::size_t>(4 * passes)) << gemm;
    const OpCost whole = whole_gemm(tiny(), l, gemm);
    for (std::size_t c = 0; c < chunks.size(); ++c) {
      const std::uint32_t i = chunks[c];
      const OpCost& cost = plan.costs[static_cast<std::size_t>(p.ops[i].cost)];
      EXPECT_EQ(cost.m, whole.m / 4);
      EXPECT_EQ(cost.split, 4);
      EXPECT_DOUBLE_EQ(cost.flops * 4, whole.flops);
      const PlanOp& piece = p.ops[i + 1];
      ASSERT_TRUE(ends_with(name_of(plan, piece), ".tp_pipeline_reducescatter")) << name_of(plan, piece);
      EXPECT_EQ(piece.collective, CollectiveOp::ReduceScatter);
      EXPECT_EQ(piece.group, GroupKind::Tp);
      EXPECT_EQ(piece.stream, StreamKind::P2P);
      EXPECT_FALSE(piece.copy_engine);
      EXPECT_EQ(piece.bytes, gathered / 4);
      EXPECT_TRUE(has_dep(p, i + 1, i)) << gemm << ": the piece reduces its chunk's output";
      if (c % 4 > 0) {
        EXPECT_TRUE(has_dep(p, i + 1, i - 1)) << gemm << ": each piece after the last";
        EXPECT_FALSE(waits_for(p, i, i - 1)) << gemm << ": the chunk overlaps the piece before";
      }
      if (c % 4 == 3) {
        const std::uint32_t next = i + 2;
        ASSERT_TRUE(ends_with(name_of(plan, p.ops[next]), std::string(".") + after)) << name_of(plan, p.ops[next]);
        EXPECT_TRUE(has_dep(p, next, i + 1)) << gemm << ": the residual add waits for the last piece";
      }
    }
  }
}

// An MoE layer under sequence parallelism as Megatron-Core's all-to-all dispatcher runs it: the router
// and the permutation on the rank's shard, the dispatch all-to-all, then the tensor group's all-gather
// of the routed tokens (top_k times the shard's hidden states, gathered: b·s·k·h elements) before the
// experts and its reduce-scatter after them, then the combine all-to-all; backward the same in reverse.
// No tensor collective on ln2's output or the combined tokens. Each in line on the compute stream.
TEST(PlanBuilderTp, MoeGathersTheRoutedTokensAfterTheDispatch) {
  const TransformerModel moe = tiny_moe();
  Layout l = layout3d(2, 2, 1, 2);
  l.sequence_parallel = true;
  l.ep = 2;
  const Plan plan = build_plan(moe, l, cluster(l));
  ASSERT_NO_THROW(validate(plan));
  const Program& p = plan.programs[0];
  const std::size_t passes = 8 * 2;  // layers x micro-batches
  const Bytes routed = 128 * 2 * 256 * 2;  // b·s·k·h, BF16
  for (const char* name : {".tp_allgather_routed", ".tp_reducescatter_routed", ".tp_allgather_routed_bwd",
                           ".tp_reducescatter_routed_bwd"}) {
    const std::vector<std::uint32_t> ops = named(plan, p, name);
    EXPECT_EQ(ops.size(), passes) << name;
    for (std::uint32_t i : ops) {
      EXPECT_EQ(p.ops[i].group, GroupKind::Tp);
      EXPECT_EQ(p.ops[i].stream, StreamKind::Compute);
      EXPECT_EQ(p.ops[i].bytes, routed) << name;
    }
  }
  EXPECT_EQ(named(plan, p, ".tp_allgather").size(), passes);  // ln1's: ln2's output stays sharded
  EXPECT_EQ(named(plan, p, ".tp_reducescatter").size(), passes);  // the projection's only
  EXPECT_EQ(named(plan, p, ".tp_allgather_bwd").size(), passes);
  // The order within one layer and micro-batch, forward and backward.
  const auto order = [&](const std::vector<std::string>& names) {
    std::vector<std::string> seen;
    for (const PlanOp& op : p.ops) {
      if (op.layer != 0 || op.micro_batch != 0) continue;
      const std::string& n = name_of(plan, op);
      for (const std::string& want : names) {
        if (ends_with(n, want)) seen.push_back(want);
      }
    }
    return seen;
  };
  EXPECT_EQ(order({".expert_permute_fwd", ".ep_alltoall", ".tp_allgather_routed", ".expert_fc1_fwd", ".expert_fc2_fwd",
                   ".tp_reducescatter_routed", ".expert_unpermute_fwd"}),
            (std::vector<std::string>{".expert_permute_fwd", ".ep_alltoall", ".tp_allgather_routed", ".expert_fc1_fwd",
                                      ".expert_fc2_fwd", ".tp_reducescatter_routed", ".ep_alltoall", ".expert_unpermute_fwd"}));
  EXPECT_EQ(order({".expert_unpermute_bwd", ".ep_alltoall_bwd", ".tp_allgather_routed_bwd", ".expert_fc2_dgrad",
                   ".expert_fc1_wgrad", ".tp_reducescatter_routed_bwd", ".expert_permute_bwd"}),
            (std::vector<std::string>{".expert_unpermute_bwd", ".ep_alltoall_bwd", ".tp_allgather_routed_bwd",
                                      ".expert_fc2_dgrad", ".expert_fc1_wgrad", ".tp_reducescatter_routed_bwd",
                                      ".ep_alltoall_bwd", ".expert_permute_bwd"}));
}

// An MoE layer's experts are no userbuffers GEMMs: its FC1 and FC2 keep the all-gather and
// reduce-scatter of the routed tokens around them; QKV and the projection are split as in a dense layer.
// Without sequence parallelism, or with tp = 1, the layout is refused, naming the field.
TEST(PlanBuilderTp, CommOverlapLeavesExpertsAndNeedsSequenceParallelism) {
  const TransformerModel moe = tiny_moe();
  Layout l = layout3d(1, 2, 1, 1);
  l.sequence_parallel = true;
  l.tp_comm_overlap = true;
  const Plan plan = build_plan(moe, l, cluster(l));
  ASSERT_NO_THROW(validate(plan));
  const Program& p = plan.programs[0];
  EXPECT_EQ(named(plan, p, ".qkv_fwd").size(), 2u * 8u);
  EXPECT_EQ(named(plan, p, ".proj_fwd").size(), 4u * 8u);
  EXPECT_EQ(named(plan, p, ".expert_fc1_fwd").size(), 8u);
  EXPECT_EQ(named(plan, p, ".tp_allgather_routed").size(), 8u);      // before the experts
  EXPECT_EQ(named(plan, p, ".tp_reducescatter_routed").size(), 8u);  // after them
  EXPECT_EQ(named(plan, p, ".tp_ring_allgather").size(), 8u);  // QKV's one step (tp 2)

  Layout no_sp = l;
  no_sp.sequence_parallel = false;
  try {
    build_plan(tiny(), no_sp, cluster(no_sp));
    ADD_FAILURE() << "tp_comm_overlap without sequence parallelism was accepted";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.path(), "/layout/tp_comm_overlap");
    EXPECT_NE(std::string(e.what()).find("sequence_parallel"), std::string::npos) << e.what();
  }
  Layout one = layout3d(2, 1, 1, 1);
  one.sequence_parallel = true;
  one.tp_comm_overlap = true;
  EXPECT_THROW(build_plan(tiny(), one, cluster(one)), ConfigError);
}
