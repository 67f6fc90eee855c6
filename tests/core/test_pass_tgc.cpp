#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "support/layouts.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/passes.hpp"
#include "twinbed/core/passes/tgc.hpp"
#include "twinbed/kernels/payload.hpp"

using namespace twinbed;
using twinbed::test_support::layout3d;

namespace {

Plan dp_plan(int dp, int zero = 0, int ranks_per_host = 8) {
  Layout l = layout3d(dp, 1, 1, 2);
  l.zero_stage = zero;
  l.bucket_bytes = 1 * MiB;
  return build_plan(gpt_model("tiny", 4, 256, 8, 128, 1024), l, {dp, ranks_per_host});
}

TgcParams tgc(int bits, double topk = 1, bool ef = true) {
  TgcParams p;
  p.bits = bits;
  p.topk_fraction = topk;
  p.error_feedback = ef;
  return p;
}

std::int64_t elements(const Program& p, const PlanOp& op) {
  std::int64_t n = 0;
  for (const ParamSlice& s : p.param_sets[static_cast<std::size_t>(op.params)]) n += s.elements;
  return n;
}

struct Exchange {
  CollectiveOp op;
  GroupKind group;
  Bytes bytes;
  std::int64_t n;
};
std::vector<Exchange> grad_collectives(const Program& p) {
  std::vector<Exchange> out;
  for (const PlanOp& op : p.ops) {
    if (op.kind == OpKind::Collective && op.tensor_class == TensorClass::Grads) out.push_back({op.collective, op.group, op.bytes, elements(p, op)});
  }
  return out;
}

std::map<OpCost::Kernel, int> kernels_of(const Plan& plan, const Program& p) {
  std::map<OpCost::Kernel, int> out;
  for (const PlanOp& op : p.ops) {
    if (op.kind == OpKind::Compute) ++out[plan.costs[static_cast<std::size_t>(op.cost)].kernel];
  }
  return out;
}

Bytes state_bytes(const Program& p) {
  Bytes b = 0;
  for (const PlanOp& op : p.ops) b += op.kind == OpKind::Alloc && op.tensor_class == TensorClass::TechniqueState ? op.bytes : 0;
  return b;
}

}  // namespace

TEST(TgcPass, LosslessIsTheIdentity) {
  const Plan base = dp_plan(4);
  Plan plan = base;
  apply_tgc(plan, tgc(0));
  EXPECT_EQ(plan, base);
}

TEST(TgcPass, QuantisedBucketsSendTheKernelsPayload) {
  for (int bits : {2, 4, 8, 16}) {
    const Plan base = dp_plan(4);
    Plan plan = base;
    apply_tgc(plan, tgc(bits));
    EXPECT_NO_THROW(validate(plan));
    const auto before = grad_collectives(base.programs[0]), after = grad_collectives(plan.programs[0]);
    ASSERT_EQ(before.size(), after.size());
    std::int64_t total = 0;
    for (std::size_t b = 0; b < after.size(); ++b) {
      kernels::QuantSpec spec;
      spec.bits = bits;
      EXPECT_EQ(after[b].op, CollectiveOp::AllReduce);  // a quantised payload is reduced hop by hop
      EXPECT_EQ(after[b].bytes, static_cast<Bytes>(kernels::quant_payload_bytes(static_cast<std::size_t>(after[b].n), spec)));
      // 16-bit codes of 16-bit (bf16) gradients save nothing: the per-block scales make them larger.
      if (bits < 16) {
        EXPECT_LT(after[b].bytes, before[b].bytes);
      } else {
        EXPECT_GT(after[b].bytes, before[b].bytes);
      }
      total += after[b].n;
    }
    const auto k = kernels_of(plan, plan.programs[0]);
    EXPECT_EQ(k.at(OpCost::Kernel::Compress), 2 * static_cast<int>(after.size()));  // compress + requantize
    EXPECT_EQ(k.at(OpCost::Kernel::Decompress), static_cast<int>(after.size()));
    EXPECT_EQ(state_bytes(plan.programs[0]), 4 * total);  // the fp32 error-feedback residual
  }
  Plan no_ef = dp_plan(4);
  apply_tgc(no_ef, tgc(8, 1, false));
  EXPECT_EQ(state_bytes(no_ef.programs[0]), 0);
}

// Adaptive width: the payloads are sized at the width the plan assumes (adaptive_bits), and the compress
// op says the rule runs there (the backends run it, the simulator times it where a profile measured it).
TEST(TgcPass, AdaptiveWidthSizesAtTheAssumedWidthAndMarksTheCompress) {
  Plan fixed = dp_plan(4), adaptive = dp_plan(4);
  apply_tgc(fixed, tgc(4));
  TgcParams p;
  p.adaptive = true;
  p.adaptive_bits = 4;
  apply_tgc(adaptive, p);
  const auto a = grad_collectives(adaptive.programs[0]), f = grad_collectives(fixed.programs[0]);
  ASSERT_EQ(a.size(), f.size());
  for (std::size_t b = 0; b < a.size(); ++b) EXPECT_EQ(a[b].bytes, f[b].bytes);
  int marked = 0;
  for (const PlanOp& op : adaptive.programs[0].ops) {
    if (op.kind != OpKind::Compute) continue;
    const OpCost& c = adaptive.costs[static_cast<std::size_t>(op.cost)];
    if (c.kernel == OpCost::Kernel::Compress && c.name == "tgc.compress") {
      EXPECT_TRUE(c.adaptive);
      EXPECT_EQ(c.bits, 4);
      ++marked;
    }
  }
  EXPECT_EQ(marked, static_cast<int>(a.size()));
  for (const OpCost& c : fixed.costs) EXPECT_FALSE(c.adaptive);
}

TEST(TgcPass, SparsePayloadsAreGatheredAndTheirVolumeGrowsWithTheRanks) {
  const double f = 0.01;
  std::vector<Bytes> sparse_per_rank, dense_per_rank;
  for (int dp : {2, 4, 8}) {
    Plan plan = dp_plan(dp);
    apply_tgc(plan, tgc(0, f));
    EXPECT_NO_THROW(validate(plan));
    Bytes received = 0;
    for (const Exchange& x : grad_collectives(plan.programs[0])) {
      EXPECT_EQ(x.op, CollectiveOp::AllGather);
      const auto k = static_cast<std::size_t>(std::ceil(f * static_cast<double>(x.n)));
      EXPECT_EQ(x.bytes, dp * static_cast<Bytes>(kernels::sparse_payload_bytes(k)));
      received += x.bytes / dp * (dp - 1);  // what each rank receives
    }
    sparse_per_rank.push_back(received);
    Bytes ring = 0;
    for (const Exchange& x : grad_collectives(dp_plan(dp).programs[0])) ring += 2 * x.bytes * (dp - 1) / dp;
    dense_per_rank.push_back(ring);
  }
  EXPECT_LT(sparse_per_rank[0], sparse_per_rank[1]);
  EXPECT_LT(sparse_per_rank[1], sparse_per_rank[2]);
  EXPECT_NEAR(static_cast<double>(sparse_per_rank[2]) / static_cast<double>(sparse_per_rank[0]), 7.0, 0.01);
  EXPECT_LT(static_cast<double>(dense_per_rank[2]) / static_cast<double>(dense_per_rank[0]), 2.0);  // 2(R-1)/R
}

TEST(TgcPass, HierarchyReducesWithinTheHostFirst) {
  Plan plan = dp_plan(8, 0, 4);  // two hosts of four
  TgcParams p = tgc(4, 0.1);
  p.hierarchy = TgcParams::Hierarchy::Hierarchical;
  apply_tgc(plan, p);
  EXPECT_NO_THROW(validate(plan));
  std::map<std::pair<GroupKind, CollectiveOp>, int> count;
  for (const Exchange& x : grad_collectives(plan.programs[0])) ++count[std::make_pair(x.group, x.op)];
  const int buckets = count[std::make_pair(GroupKind::DpIntra, CollectiveOp::ReduceScatter)];
  EXPECT_GT(buckets, 0);
  EXPECT_EQ(count[std::make_pair(GroupKind::DpInter, CollectiveOp::AllGather)], buckets);
  EXPECT_EQ(count[std::make_pair(GroupKind::DpIntra, CollectiveOp::AllGather)], buckets);
  EXPECT_EQ(count[std::make_pair(GroupKind::Dp, CollectiveOp::AllReduce)], 0);
}

TEST(TgcPass, ZeroStagesCompressTheirReductions) {
  for (int zero : {1, 2, 3}) {
    Plan plan = dp_plan(4, zero);
    apply_tgc(plan, tgc(4));
    EXPECT_NO_THROW(validate(plan)) << "zero " << zero;
    for (const Exchange& x : grad_collectives(plan.programs[0])) EXPECT_EQ(x.op, CollectiveOp::ReduceScatter);
    EXPECT_GT(kernels_of(plan, plan.programs[0]).at(OpCost::Kernel::Decompress), 0);
  }
}

// Hybrid sharding reduces in two steps (within the shard group, then across the groups), which TGC does
// not model: the combination is refused, not left uncompressed.
TEST(TgcPass, HybridShardingIsRefused) {
  Layout l;
  l.dp = 4;
  l.global_batch = 8;
  l.zero_stage = 3;
  l.zero_shard_ranks = 2;
  Plan plan = build_plan(gpt_model("tiny", 4, 256, 8, 128, 1024), l, {4, 4});
  try {
    apply_tgc(plan, tgc(4));
    FAIL() << "no throw";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.path(), "");
    EXPECT_NE(std::string(e.what()).find("zero_shard_ranks"), std::string::npos) << e.what();
  }
}

TEST(TgcPass, ParameterErrorsNameTheKey) {
  const auto path_of = [](const nlohmann::json& j) {
    try {
      tgc_params_from_json(j, "/t");
    } catch (const ConfigError& e) {
      return e.path();
    }
    return std::string("no error");
  };
  EXPECT_EQ(path_of({{"pass", "tgc"}, {"bits", 3}}), "/t/bits");
  EXPECT_EQ(path_of({{"pass", "tgc"}, {"bits", "many"}}), "/t/bits");
  EXPECT_EQ(path_of({{"pass", "tgc"}, {"bits", 8}, {"adaptive_bits", 8}}), "/t/adaptive_bits");
  EXPECT_EQ(path_of({{"pass", "tgc"}, {"bits", "adaptive"}, {"adaptive_bits", 2}}), "/t/adaptive_bits");
  EXPECT_EQ(path_of({{"pass", "tgc"}, {"bits", 8}, {"adaptive_tolerance", 0.1}}), "/t/adaptive_tolerance");
  EXPECT_EQ(path_of({{"pass", "tgc"}, {"bits", "adaptive"}, {"adaptive_tolerance", 0}}), "/t/adaptive_tolerance");
  EXPECT_EQ(path_of({{"pass", "tgc"}, {"topk_fraction", 0}}), "/t/topk_fraction");
  EXPECT_EQ(path_of({{"pass", "tgc"}, {"block_size", 12}}), "/t/block_size");
  EXPECT_EQ(path_of({{"pass", "tgc"}, {"hierarchy", "tree"}}), "/t/hierarchy");
  EXPECT_EQ(path_of({{"pass", "tgc"}, {"bitz", 4}}), "/t/bitz");
  const TgcParams a = tgc_params_from_json({{"pass", "tgc"}, {"bits", "adaptive"}, {"topk_fraction", 0.1}}, "/t");
  nlohmann::json back = tgc_params_to_json(a);
  back["pass"] = "tgc";
  EXPECT_EQ(tgc_params_from_json(back, "/t"), a);
  EXPECT_EQ(tgc_payload_bytes(1000, a), static_cast<Bytes>(4 * 100 + (100 + 255) / 256 * 4 + 100));  // 8-bit values
}
