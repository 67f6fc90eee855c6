// CacheResidency: what of a CPU rank's compute pool an op finds in cache, by how long ago an op
// touched each part of its footprint; and cold_data_time, what the rest costs a memory-bound op.
#include <gtest/gtest.h>

#include "twinbed/core/error.hpp"
#include "twinbed/sim/cache_residency.hpp"
#include "twinbed/sim/compute_model.hpp"

using namespace twinbed;
using namespace twinbed::sim;

namespace {

const Time kHalfLife = Time::ms(10);

PoolFootprint floats(std::int64_t in, std::int64_t out) { return {in, out}; }

}  // namespace

// Nothing touched yet: the whole footprint comes from memory (4 bytes a float).
TEST(CacheResidency, AFootprintNoOpTouchedIsCold) {
  const CacheResidency cache(kHalfLife);
  EXPECT_DOUBLE_EQ(cache.cold_bytes(floats(1000, 250), Time{}), 4 * 1250.0);
}

// Touched just now: all in cache; half of it after one half-life, three quarters after two.
TEST(CacheResidency, WhatAnOpTouchedLeavesTheCacheByHalfLives) {
  CacheResidency cache(kHalfLife);
  cache.touch(floats(1000, 1000), Time::ms(5));
  EXPECT_DOUBLE_EQ(cache.cold_bytes(floats(1000, 1000), Time::ms(5)), 0);
  EXPECT_NEAR(cache.cold_bytes(floats(1000, 1000), Time::ms(15)), 0.5 * 8000, 1e-6);
  EXPECT_NEAR(cache.cold_bytes(floats(1000, 1000), Time::ms(25)), 0.75 * 8000, 1e-6);
}

// An op reaching further than the one before it finds the part beyond that op as the ops before left
// it: here [0, 100) touched now, [100, 1000) a half-life ago, [1000, 4000) never.
TEST(CacheResidency, EachPartOfAFootprintAgesFromItsOwnLastTouch) {
  CacheResidency cache(kHalfLife);
  cache.touch(floats(1000, 0), Time::ms(0));
  cache.touch(floats(100, 0), Time::ms(10));
  EXPECT_NEAR(cache.cold_bytes(floats(4000, 0), Time::ms(10)), 4 * (0 + 0.5 * 900 + 3000), 1e-6);
  // Inside the latest op's reach: all in cache.
  EXPECT_DOUBLE_EQ(cache.cold_bytes(floats(100, 0), Time::ms(10)), 0);
}

// A later op reaching as far hides the earlier touch; input and output regions age apart.
TEST(CacheResidency, ALaterTouchHidesAnEarlierOneAndRegionsAreApart) {
  CacheResidency cache(kHalfLife);
  cache.touch(floats(500, 2000), Time::ms(0));
  cache.touch(floats(800, 0), Time::ms(20));
  // Input: [0, 800) touched at 20 ms; output: [0, 2000) at 0 ms, two half-lives before.
  EXPECT_NEAR(cache.cold_bytes(floats(800, 2000), Time::ms(20)), 4 * (0 + 0.75 * 2000), 1e-6);
}

TEST(CacheResidency, RejectsANonPositiveHalfLife) { EXPECT_THROW(CacheResidency(Time{}), InvalidArgument); }

// Cold bytes move at the memory's bandwidth instead of the working set's rate: for a 1 MB stream
// measured at 40 GB/s on a machine whose memory gives 10, each cold byte costs 1/10 - 1/40 ns more.
TEST(ColdDataTime, ColdBytesMoveAtTheMemorysBandwidth) {
  ComputeProfile p;
  p.memory_bandwidth = 10 * GBps;
  p.memory_samples = {{1'000'000, 40 * GBps}, {100'000'000, 10 * GBps}};
  OpCost op;
  op.kind = OpCost::Kind::MemoryBound;
  op.bytes = 1'000'000;
  EXPECT_NEAR(cold_data_time(op, p, 400'000).seconds(), 400'000 * (1 / 10e9 - 1 / 40e9), 1e-15);
  // A working set already at the memory's rate, and a matmul, pay nothing more.
  op.bytes = 100'000'000;
  EXPECT_EQ(cold_data_time(op, p, 1e6), Time{});
  op.kind = OpCost::Kind::Gemm;
  op.bytes = 1'000'000;
  EXPECT_EQ(cold_data_time(op, p, 1e6), Time{});
}
