#include "twinbed/core/memory_plan.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "twinbed/core/error.hpp"

namespace twinbed {
namespace {

using Planner = ArenaPlan (*)(const std::vector<TensorLife>&, Bytes);
const Planner kPlanners[] = {&plan_greedy_by_size, &plan_greedy_by_breadth};

std::int64_t uniform(std::mt19937_64& rng, std::int64_t lo, std::int64_t hi) {  // [lo, hi]
  return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
}

// 1..60 tensors over 40 positions; some zero-byte, some never freed, sizes not multiples of anything.
std::vector<TensorLife> random_tensors(std::mt19937_64& rng) {
  std::vector<TensorLife> tensors(static_cast<std::size_t>(uniform(rng, 1, 60)));
  for (TensorLife& t : tensors) {
    t.bytes = uniform(rng, 0, 7) == 0 ? 0 : uniform(rng, 1, 5000);
    t.alloc = uniform(rng, 0, 39);
    t.free = uniform(rng, 0, 5) == 0 ? kNeverFreed : t.alloc + uniform(rng, 1, 20);
  }
  return tensors;
}

Bytes random_alignment(std::mt19937_64& rng) {
  const Bytes choices[] = {1, 8, 64, 256, 512};
  return choices[uniform(rng, 0, 4)];
}

// Reference planners, written from the paper's description without the library's shortcuts: every
// conflicting placed tensor is collected, sorted by offset and walked; breadth visits every position
// where something is allocated or freed, its live set found by brute force.
Bytes aligned(Bytes bytes, Bytes alignment) { return (bytes + alignment - 1) / alignment * alignment; }

bool larger_first(const std::vector<TensorLife>& tensors, std::size_t a, std::size_t b) {
  if (tensors[a].bytes != tensors[b].bytes) return tensors[a].bytes > tensors[b].bytes;
  if (tensors[a].alloc != tensors[b].alloc) return tensors[a].alloc < tensors[b].alloc;
  return a < b;
}

std::vector<Bytes> reference_place(const std::vector<TensorLife>& tensors, const std::vector<std::size_t>& order,
                                   Bytes alignment) {
  std::vector<Bytes> offsets(tensors.size(), 0);
  std::vector<std::size_t> placed;
  for (std::size_t i : order) {
    const Bytes size = aligned(tensors[i].bytes, alignment);
    if (size == 0) continue;
    std::vector<std::pair<Bytes, Bytes>> taken;  // [offset, end) of conflicting placed tensors
    for (std::size_t j : placed) {
      if (intervals_overlap(tensors[i], tensors[j])) {
        taken.emplace_back(offsets[j], offsets[j] + aligned(tensors[j].bytes, alignment));
      }
    }
    std::sort(taken.begin(), taken.end());
    Bytes top = 0;
    Bytes best = -1;
    Bytes best_gap = 0;
    for (auto [offset, end] : taken) {
      if (offset - top >= size && (best < 0 || offset - top < best_gap)) {
        best = top;
        best_gap = offset - top;
      }
      top = std::max(top, end);
    }
    offsets[i] = best >= 0 ? best : top;
    placed.push_back(i);
  }
  return offsets;
}

std::vector<Bytes> reference_by_size(const std::vector<TensorLife>& tensors, Bytes alignment) {
  std::vector<std::size_t> order(tensors.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return larger_first(tensors, a, b); });
  return reference_place(tensors, order, alignment);
}

std::vector<Bytes> reference_by_breadth(const std::vector<TensorLife>& tensors, Bytes alignment) {
  std::vector<std::int64_t> positions;
  for (const TensorLife& t : tensors) {
    positions.push_back(t.alloc);
    if (t.free != kNeverFreed) positions.push_back(t.free);
  }
  std::sort(positions.begin(), positions.end());
  positions.erase(std::unique(positions.begin(), positions.end()), positions.end());
  auto live_at = [&](std::int64_t p, std::size_t i) { return tensors[i].alloc <= p && p < tensors[i].free; };
  std::vector<Bytes> breadth(positions.size(), 0);
  for (std::size_t k = 0; k < positions.size(); ++k) {
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      if (live_at(positions[k], i)) breadth[k] += aligned(tensors[i].bytes, alignment);
    }
  }
  std::vector<std::size_t> visit(positions.size());
  for (std::size_t k = 0; k < visit.size(); ++k) visit[k] = k;
  std::stable_sort(visit.begin(), visit.end(), [&](std::size_t a, std::size_t b) { return breadth[a] > breadth[b]; });
  std::vector<std::size_t> order;
  std::vector<bool> queued(tensors.size(), false);
  for (std::size_t k : visit) {
    std::vector<std::size_t> here;
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      if (!queued[i] && live_at(positions[k], i)) here.push_back(i);
    }
    std::sort(here.begin(), here.end(), [&](std::size_t a, std::size_t b) { return larger_first(tensors, a, b); });
    for (std::size_t i : here) {
      queued[i] = true;
      order.push_back(i);
    }
  }
  return reference_place(tensors, order, alignment);
}

TEST(MemoryPlan, PlannersMatchTheReferenceImplementations) {
  std::mt19937_64 rng(1234);
  for (int instance = 0; instance < 300; ++instance) {
    const std::vector<TensorLife> tensors = random_tensors(rng);
    const Bytes alignment = random_alignment(rng);
    SCOPED_TRACE("instance " + std::to_string(instance));
    EXPECT_EQ(plan_greedy_by_size(tensors, alignment).offsets,
              reference_by_size(tensors, alignment));
    EXPECT_EQ(plan_greedy_by_breadth(tensors, alignment).offsets,
              reference_by_breadth(tensors, alignment));
  }
}

TEST(MemoryPlan, RandomInstancesGiveValidPlansWithinBounds) {
  std::mt19937_64 rng(20200309);
  for (int instance = 0; instance < 400; ++instance) {
    const std::vector<TensorLife> tensors = random_tensors(rng);
    const Bytes alignment = random_alignment(rng);
    const Bytes lower = live_bytes_lower_bound(tensors, alignment);
    const Bytes upper = no_reuse_bytes(tensors, alignment);
    for (Planner planner : kPlanners) {
      const ArenaPlan plan = planner(tensors, alignment);
      SCOPED_TRACE("instance " + std::to_string(instance) + ", " + plan.planner);
      ASSERT_EQ(plan.offsets.size(), tensors.size());
      EXPECT_EQ(check_arena_plan(tensors, plan, alignment), "");
      EXPECT_LE(lower, plan.size);
      EXPECT_LE(plan.size, upper);
      EXPECT_EQ(plan, planner(tensors, alignment));  // deterministic
    }
  }
}

TEST(MemoryPlan, CheckerCatchesBrokenPlans) {
  const std::vector<TensorLife> tensors = {{100, 0, 2}, {50, 1, 3}, {70, 3, 4}};
  const ArenaPlan good{"hand", {0, 128, 0}, 192};
  EXPECT_EQ(check_arena_plan(tensors, good, 64), "");

  ArenaPlan overlapping = good;
  overlapping.offsets[1] = 64;  // [64, 114) meets tensor 0's [0, 100) while both are live
  EXPECT_NE(check_arena_plan(tensors, overlapping, 64), "");
  overlapping.offsets[1] = 100;  // touching is fine at alignment 1 ...
  EXPECT_EQ(check_arena_plan(tensors, overlapping, 1), "");
  overlapping.offsets[1] = 99;  // ... one byte of overlap is not
  EXPECT_NE(check_arena_plan(tensors, overlapping, 1), "");

  ArenaPlan misaligned = good;
  misaligned.offsets[1] = 130;
  EXPECT_NE(check_arena_plan(tensors, misaligned, 64), "");
  ArenaPlan negative = good;
  negative.offsets[2] = -64;
  EXPECT_NE(check_arena_plan(tensors, negative, 64), "");
  ArenaPlan too_small = good;
  too_small.size = 128;  // tensor 1 needs [128, 192)
  EXPECT_NE(check_arena_plan(tensors, too_small, 64), "");
}

TEST(MemoryPlan, DisjointLifetimesShareOffsetZero) {
  const std::vector<TensorLife> tensors = {{100, 0, 1}, {300, 1, 2}, {200, 2, 3}, {0, 0, 3}};
  for (Planner planner : kPlanners) {
    const ArenaPlan plan = planner(tensors, 64);
    EXPECT_EQ(plan.offsets, (std::vector<Bytes>{0, 0, 0, 0})) << plan.planner;
    EXPECT_EQ(plan.size, 320) << plan.planner;  // the largest, 300 bytes, aligned to 64
  }
}

TEST(MemoryPlan, ChainOfThreeReusesTheFirstForTheLast) {
  // a [0,2) and c [2,4) never meet; b [1,3) meets both.
  const std::vector<TensorLife> tensors = {{10, 0, 2}, {20, 1, 3}, {30, 2, 4}};
  for (Planner planner : kPlanners) {
    const ArenaPlan plan = planner(tensors, 1);
    EXPECT_EQ(plan.offsets, (std::vector<Bytes>{0, 30, 0})) << plan.planner;
    EXPECT_EQ(plan.size, 50) << plan.planner;
  }
  EXPECT_EQ(live_bytes_lower_bound(tensors, 1), 50);
}

TEST(MemoryPlan, AllOverlappingTensorsTakeTheSum) {
  const std::vector<TensorLife> tensors = {{10, 0, kNeverFreed}, {20, 1, 5}, {30, 2, kNeverFreed}};
  for (Planner planner : kPlanners) {
    const ArenaPlan plan = planner(tensors, 16);
    EXPECT_EQ(plan.size, 16 + 32 + 32) << plan.planner;
    EXPECT_EQ(check_arena_plan(tensors, plan, 16), "");
  }
  EXPECT_EQ(no_reuse_bytes(tensors, 16), 80);
  EXPECT_EQ(live_bytes_lower_bound(tensors, 16), 80);
}

TEST(MemoryPlan, EmptyProgram) {
  const std::vector<TensorLife> none;
  for (Planner planner : kPlanners) {
    const ArenaPlan plan = planner(none, 8);
    EXPECT_TRUE(plan.offsets.empty());
    EXPECT_EQ(plan.size, 0);
  }
  EXPECT_EQ(live_bytes_lower_bound(none, 8), 0);
  EXPECT_EQ(no_reuse_bytes(none, 8), 0);
  EXPECT_EQ(caching_allocator_peak(none), 0);
}

// The example of Pisarchyk & Lee (also TensorFlow Lite's memory_management_test), records
// {size, first op, last op} with last inclusive. Breadth peaks at op 5: 8 + 16 + 8 + 64 = 96, and greedy
// by size reaches 96, so 96 is the optimum and the lower bound is tight here.
TEST(MemoryPlan, LowerBoundIsTheOptimumOnThePapersExample) {
  const std::vector<TensorLife> tensors = {{32, 0, 2}, {32, 1, 5}, {8, 2, 6},  {16, 3, 6}, {8, 4, 6},
                                           {64, 5, 8}, {8, 6, 9},  {8, 7, 9},  {16, 8, 10}};
  EXPECT_EQ(live_bytes_lower_bound(tensors, 1), 96);
  const ArenaPlan by_size = plan_greedy_by_size(tensors, 1);
  EXPECT_EQ(by_size.size, 96);
  EXPECT_EQ(by_size.offsets, (std::vector<Bytes>{0, 32, 80, 64, 88, 0, 64, 72, 0}));
  const ArenaPlan by_breadth = plan_greedy_by_breadth(tensors, 1);
  EXPECT_EQ(check_arena_plan(tensors, by_breadth, 1), "");
  EXPECT_EQ(by_breadth.size, 96);
}

// Equal sizes: greedy by size visits tensors by alloc (its tie-break), so each tensor conflicts only
// with placed tensors live at its alloc, fewer than the largest live count; offsets are multiples of the
// size, so a slot below that count is free. The plan meets the lower bound, which is thus the optimum.
TEST(MemoryPlan, LowerBoundIsTheOptimumForEqualSizes) {
  std::mt19937_64 rng(42);
  for (int instance = 0; instance < 200; ++instance) {
    std::vector<TensorLife> tensors = random_tensors(rng);
    const Bytes size = uniform(rng, 1, 1000);
    for (TensorLife& t : tensors) t.bytes = size;
    const ArenaPlan plan = plan_greedy_by_size(tensors, 1);
    EXPECT_EQ(plan.size, live_bytes_lower_bound(tensors, 1)) << "instance " << instance;
  }
}

TEST(MemoryPlan, ManyTensorsStayValid) {
  std::mt19937_64 rng(3);
  std::vector<TensorLife> tensors(3000);
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const auto position = static_cast<std::int64_t>(i);
    tensors[i] = i % 10 == 0 ? TensorLife{uniform(rng, 1, 1 << 20), position, kNeverFreed}
                             : TensorLife{uniform(rng, 0, 1 << 20), position, position + uniform(rng, 1, 200)};
  }
  for (Planner planner : kPlanners) {
    const ArenaPlan plan = planner(tensors, 256);
    EXPECT_EQ(check_arena_plan(tensors, plan, 256), "") << plan.planner;
    EXPECT_LE(live_bytes_lower_bound(tensors, 256), plan.size);
    EXPECT_LT(plan.size, no_reuse_bytes(tensors, 256));
  }
}

TEST(MemoryPlan, BadArgumentsThrow) {
  const std::vector<TensorLife> good = {{100, 0, 2}};
  const std::vector<TensorLife> negative = {{-1, 0, 2}};
  const std::vector<TensorLife> empty_life = {{100, 2, 2}};
  const std::vector<TensorLife> backwards = {{100, 3, 2}};
  for (Planner planner : kPlanners) {
    EXPECT_THROW(planner(negative, 1), InvalidArgument);
    EXPECT_THROW(planner(empty_life, 1), InvalidArgument);
    EXPECT_THROW(planner(backwards, 1), InvalidArgument);
    EXPECT_THROW(planner(good, 0), InvalidArgument);
    EXPECT_THROW(planner(good, -8), InvalidArgument);
  }
  EXPECT_THROW(live_bytes_lower_bound(negative, 1), InvalidArgument);
  EXPECT_THROW(live_bytes_lower_bound(good, 0), InvalidArgument);
  EXPECT_THROW(no_reuse_bytes(backwards, 1), InvalidArgument);
  EXPECT_THROW(no_reuse_bytes(good, 0), InvalidArgument);
  EXPECT_THROW(caching_allocator_peak(negative), InvalidArgument);
  EXPECT_THROW(caching_allocator_peak(empty_life), InvalidArgument);
  EXPECT_THROW(check_arena_plan(good, ArenaPlan{"hand", {0, 0}, 128}, 1), InvalidArgument);
  EXPECT_THROW(check_arena_plan(good, ArenaPlan{"hand", {0}, 128}, 0), InvalidArgument);
  // Byte totals beyond int64 are refused, not wrapped.
  const std::vector<TensorLife> huge = {{INT64_MAX - 1, 0, 1}, {INT64_MAX / 2, 0, 1}};
  EXPECT_THROW(no_reuse_bytes({huge[0]}, 4), InvalidArgument);
  EXPECT_THROW(plan_greedy_by_size(huge, 1), InvalidArgument);
  EXPECT_THROW(caching_allocator_peak({huge[0]}), InvalidArgument);
}

Bytes peak_of(const std::vector<TensorLife>& tensors) { return caching_allocator_peak(tensors); }

TEST(CachingAllocator, SegmentSizes) {
  EXPECT_EQ(peak_of({{100, 0, 1}}), 2 * MiB);            // small pool segment
  EXPECT_EQ(peak_of({{MiB, 0, 1}}), 2 * MiB);            // 1 MiB is still small
  EXPECT_EQ(peak_of({{5 * MiB, 0, 1}}), 20 * MiB);       // below 10 MiB: a 20 MiB segment
  EXPECT_EQ(peak_of({{30 * MiB, 0, 1}}), 30 * MiB);      // larger: rounded up to 2 MiB
  EXPECT_EQ(peak_of({{29 * MiB + 1, 0, 1}}), 30 * MiB);
  EXPECT_EQ(peak_of({{0, 0, 1}}), 0);                    // no allocation for 0 bytes
}

TEST(CachingAllocator, FreedBlocksAreReused) {
  // A (1 MiB + 1, large pool) is freed before B of the same size: B takes A's cached block.
  EXPECT_EQ(peak_of({{MiB + 1, 0, 1}, {MiB + 1, 2, 3}}), 20 * MiB);
  // Frees come before allocs at one position.
  EXPECT_EQ(peak_of({{15 * MiB, 0, 1}, {15 * MiB, 1, 2}}), 16 * MiB);
  // While A is live, B needs a segment of its own.
  EXPECT_EQ(peak_of({{15 * MiB, 0, 2}, {15 * MiB, 1, 3}}), 32 * MiB);
}

TEST(CachingAllocator, SegmentsAreSplitAndShared) {
  // 5 MiB and 8 MiB fit one 20 MiB segment (the 15 MiB rest of the first is split off and reused).
  EXPECT_EQ(peak_of({{5 * MiB, 0, 3}, {8 * MiB, 1, 3}}), 20 * MiB);
  // A third 8 MiB request no longer fits the 7 MiB left.
  EXPECT_EQ(peak_of({{5 * MiB, 0, 3}, {8 * MiB, 1, 3}, {8 * MiB, 2, 3}}), 40 * MiB);
  // Two 1 MiB small requests fill a 2 MiB small segment; 512 more bytes need another.
  EXPECT_EQ(peak_of({{MiB, 0, 3}, {MiB, 1, 3}}), 2 * MiB);
  EXPECT_EQ(peak_of({{MiB, 0, 3}, {MiB, 1, 3}, {512, 2, 3}}), 4 * MiB);
  // Small and large pools never share: 100 bytes next to a 5 MiB block still takes a small segment.
  EXPECT_EQ(peak_of({{5 * MiB, 0, 3}, {100, 1, 3}}), 22 * MiB);
}

TEST(CachingAllocator, SplitThresholds) {
  // Small pool: a rest of exactly 512 bytes is split off. A (1 MiB - 512) leaves 1 MiB + 512; B (1 MiB)
  // leaves 512, which C (512) then takes: one 2 MiB segment.
  EXPECT_EQ(peak_of({{MiB - 512, 0, 9}, {MiB, 1, 9}, {512, 2, 9}}), 2 * MiB);
  // Large pool: a rest just over 1 MiB is split off. A (19 MiB - 512) gets a 20 MiB segment and leaves
  // 1 MiB + 512, which B (1 MiB + 1, rounded to 1 MiB + 512) takes.
  EXPECT_EQ(peak_of({{19 * MiB - 512, 0, 9}, {MiB + 1, 1, 9}}), 20 * MiB);
}

TEST(CachingAllocator, FreedNeighboursMerge) {
  // Two 8 MiB blocks of one segment are freed and merge with the free rest into 20 MiB, which then
  // holds an 18 MiB request; without merging it would need a new segment.
  EXPECT_EQ(peak_of({{8 * MiB, 0, 2}, {8 * MiB, 1, 2}, {18 * MiB, 3, 4}}), 20 * MiB);
}

TEST(CachingAllocator, BestFitPicksTheSmallestFreeBlock) {
  // Segment 1 (20 MiB) holds a [0, 8 MiB) and b [8, 20 MiB); segment 2 holds c [20, 24 MiB) and
  // d [24, 40 MiB). Once a and c are freed, a 4 MiB request takes c's 4 MiB hole (best fit, though a's
  // 8 MiB hole is lower), so the 8 MiB request after it still fits in a's: no third segment.
  const std::vector<TensorLife> tensors = {{8 * MiB, 0, 5},  {12 * MiB, 1, 9}, {4 * MiB, 2, 4},
                                           {16 * MiB, 3, 9}, {4 * MiB, 6, 9},  {8 * MiB, 7, 9}};
  EXPECT_EQ(peak_of(tensors), 40 * MiB);
}

TEST(CachingAllocator, PeakIsNeverBelowTheLiveBytes) {
  std::mt19937_64 rng(11);
  for (int instance = 0; instance < 300; ++instance) {
    std::vector<TensorLife> tensors = random_tensors(rng);
    for (TensorLife& t : tensors) t.bytes *= uniform(rng, 1, 8000);  // up to ~40 MB: both pools
    const Bytes peak = caching_allocator_peak(tensors);
    EXPECT_LE(live_bytes_lower_bound(tensors, 512), peak) << "instance " << instance;
    EXPECT_EQ(peak % (2 * MiB), 0);  // every segment size is a multiple of 2 MiB
  }
}

}  // namespace
}  // namespace twinbed
