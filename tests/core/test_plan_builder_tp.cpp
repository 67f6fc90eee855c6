// The builder's tensor-parallel backward of the column-parallel GEMMs (QKV, FC1) as Megatron-LM issues
// it (plan_builder.cpp, ColumnBackward), the data-parallel buckets issued in backward order, the
// gradient dtype of the layout, and what an FP8 model's ranks send each other.
#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <vector>

#include "support/layouts.hpp"
#include "twinbed/core/plan.hpp"

using namespace twinbed;
using twinbed::test_support::layout3d;

namespace {

TransformerModel tiny() { return gpt_model("tiny", 8, 256, 8, 128, 1024); }

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
