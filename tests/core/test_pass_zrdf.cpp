#include <gtest/gtest.h>

#include <vector>

#include "support/layouts.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/passes.hpp"
#include "twinbed/core/passes/tgc.hpp"
#include "twinbed/core/passes/zrdf.hpp"

using namespace twinbed;
using twinbed::test_support::layout3d;

namespace {

Plan plan_of(int dp, int tp, int pp, int zero, Recompute rc = Recompute::Selective) {
  Layout l = layout3d(dp, tp, pp, 4);
  l.zero_stage = zero;
  l.recompute = rc;
  l.bucket_bytes = 256 * KiB;
  return build_plan(gpt_model("tiny", 4, 256, 8, 128, 1024), l, {dp * tp * pp, 4});
}

// happens[i] holds every op that happens before op i on its rank, by brute force: the transitive
// closure of dependencies and same-stream order (compute and collective streams are FIFO).
std::vector<std::vector<bool>> happens_before(const Program& p) {
  const std::size_t n = p.ops.size();
  std::vector<std::vector<bool>> hb(n, std::vector<bool>(n, false));
  std::int64_t last[3] = {-1, -1, -1};
  for (std::size_t i = 0; i < n; ++i) {
    std::vector<std::size_t> preds(p.deps_of(i), p.deps_of(i) + p.num_deps(i));
    const auto s = static_cast<std::size_t>(p.ops[i].stream);
    if (p.ops[i].stream != StreamKind::P2P) {
      if (last[s] >= 0) preds.push_back(static_cast<std::size_t>(last[s]));
      last[s] = static_cast<std::int64_t>(i);
    }
    for (std::size_t d : preds) {
      hb[i][d] = true;
      for (std::size_t k = 0; k < n; ++k) {
        if (hb[d][k]) hb[i][k] = true;
      }
    }
  }
  return hb;
}

// Every two tensors whose arena ranges overlap are ordered: one's Free happens before the other's Alloc.
void expect_safe(const Program& p) {
  const Arena& a = p.arena;
  ASSERT_GT(a.size, 0);
  const auto hb = happens_before(p);
  struct T {
    std::int32_t id;
    std::size_t alloc, free;
    Bytes bytes;
  };
  std::vector<T> tensors;
  for (std::size_t i = 0; i < p.ops.size(); ++i) {
    if (p.ops[i].kind == OpKind::Alloc) tensors.push_back({p.ops[i].tensor, i, SIZE_MAX, p.ops[i].bytes});
    if (p.ops[i].kind == OpKind::Free) {
      for (T& t : tensors) {
        if (t.id == p.ops[i].tensor) t.free = i;
      }
    }
  }
  for (std::size_t x = 0; x < tensors.size(); ++x) {
    const Bytes ox = a.offset(tensors[x].id);
    ASSERT_GE(ox, 0);
    EXPECT_LE(ox + tensors[x].bytes, a.size);
    for (std::size_t y = x + 1; y < tensors.size(); ++y) {
      const Bytes oy = a.offset(tensors[y].id);
      const bool share = ox < oy + tensors[y].bytes && oy < ox + tensors[x].bytes && tensors[x].bytes > 0 && tensors[y].bytes > 0;
      if (!share) continue;
      const bool x_first = tensors[x].free != SIZE_MAX && hb[tensors[y].alloc][tensors[x].free];
      const bool y_first = tensors[y].free != SIZE_MAX && hb[tensors[x].alloc][tensors[y].free];
      EXPECT_TRUE(x_first || y_first) << "tensors " << tensors[x].id << " and " << tensors[y].id << " share memory unordered";
    }
  }
}

}  // namespace

TEST(ZrdfPass, PlannerNoneIsTheIdentity) {
  const Plan base = plan_of(2, 2, 2, 1);
  Plan plan = base;
  apply_zrdf(plan, ZrdfParams{"none", 512});
  EXPECT_EQ(plan, base);
}

TEST(ZrdfPass, ArenasAreSafeAndBetweenTheBounds) {
  struct Case {
    Plan plan;
    const char* what;
  };
  std::vector<Case> cases;
  cases.push_back({plan_of(2, 2, 2, 0), "3d, zero 0"});
  cases.push_back({plan_of(4, 1, 1, 3, Recompute::Full), "zero 3: buffers across streams"});
  Plan compressed = plan_of(4, 1, 2, 1);
  apply_tgc(compressed, TgcParams{4, false, 8, 256, 0.1, true, TgcParams::Hierarchy::Flat});
  cases.push_back({compressed, "tgc payload buffers on the collective stream"});
  for (const char* planner : {"greedy_by_size", "greedy_by_breadth"}) {
    for (Case c : cases) {
      apply_zrdf(c.plan, ZrdfParams{planner, 512});
      EXPECT_NO_THROW(validate(c.plan));
      for (const Program& p : c.plan.programs) {
        SCOPED_TRACE(std::string(planner) + ", " + c.what);
        expect_safe(p);
        EXPECT_EQ(p.arena.planner, planner);
        EXPECT_LE(p.arena.lower_bound, p.arena.size);
        EXPECT_LE(p.arena.size, p.arena.no_reuse);
        EXPECT_GE(p.arena.caching_allocator, p.arena.lower_bound);
        EXPECT_GT(zrdf_reuse_ratio(p.arena), 0.0);
        EXPECT_LT(zrdf_reuse_ratio(p.arena), 1.0);
      }
    }
  }
}

TEST(ZrdfPass, MustComeLastAndParametersAreStrict) {
  Plan plan = plan_of(2, 1, 1, 0);
  apply_zrdf(plan, ZrdfParams{});
  EXPECT_THROW(apply_tgc(plan, TgcParams{8, false, 8, 256, 1, true, TgcParams::Hierarchy::Flat}), InvalidArgument);
  EXPECT_THROW(zrdf_params_from_json({{"pass", "zrdf"}, {"planner", "best"}}, "/t"), ConfigError);
  EXPECT_THROW(zrdf_params_from_json({{"pass", "zrdf"}, {"alignment_bytes", 0}}, "/t"), ConfigError);
  EXPECT_EQ(zrdf_params_from_json({{"pass", "zrdf"}}, "/t"), ZrdfParams{});
}
