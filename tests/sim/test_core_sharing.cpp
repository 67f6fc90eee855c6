// CoreSharing: ranks bound to a machine's cores hold them from op to op and hand them on, first come,
// first served, when they wait for communication or their slice is over.
#include <gtest/gtest.h>

#include <functional>
#include <vector>

#include "twinbed/core/error.hpp"
#include "twinbed/sim/core_sharing.hpp"
#include "twinbed/sim/engine.hpp"

using namespace twinbed;
using namespace twinbed::sim;

namespace {

const Time kSlice = Time::ms(1.5);

// Rank `rank` computes an op of `alone` once it holds a core and gives the core away after it
// (it waits for communication then); `ended` gets when the op got its core and when it ended.
struct Op {
  Time started, ended;
};
void compute_then_wait(Engine& engine, CoreSharing& cores, int rank, Time alone, Op& op) {
  cores.acquire(rank, [&engine, &cores, rank, alone, &op] {
    op.started = engine.now();
    engine.schedule_after(alone, [&engine, &cores, rank, &op] {
      op.ended = engine.now();
      cores.release(rank);
    });
  });
}

}  // namespace

// A rank that finds its core free (rank 1: core 1 of 2) has it at once, inside the call, and keeps it
// until it gives it away.
TEST(CoreSharing, ARankThatFindsAFreeCoreHasItAtOnce) {
  Engine engine;
  CoreSharing cores(engine, 2, 3, kSlice);
  bool granted = false;
  cores.acquire(1, [&] { granted = true; });
  EXPECT_TRUE(granted);
  EXPECT_TRUE(cores.holds(1));
  EXPECT_FALSE(cores.holds(0));
  EXPECT_EQ(cores.busy(), 1);
  cores.release(1);
  EXPECT_FALSE(cores.holds(1));
  EXPECT_EQ(cores.busy(), 0);
  cores.release(1);  // holds none: nothing
  EXPECT_EQ(cores.busy(), 0);
}

// Five ranks on two cores: ranks 0, 2 and 4 on core 0, ranks 1 and 3 on core 1. Rank 0 computes
// 1 ms from 0; rank 2 asks at 0 for 2 ms and rank 4 at 0.5 ms for 1 ms: each waits for core 0, in
// turn (1 to 3 ms, then 3 to 4), while rank 3, asking at 0.5 ms for 1 ms, finds core 1 free.
TEST(CoreSharing, ARankWaitsForItsOwnCoreFirstComeFirstServed) {
  Engine engine;
  CoreSharing cores(engine, 2, 5, kSlice);
  std::vector<Op> op(5);
  compute_then_wait(engine, cores, 0, Time::ms(1), op[0]);
  compute_then_wait(engine, cores, 2, Time::ms(2), op[2]);
  engine.schedule_at(Time::us(500), [&] {
    compute_then_wait(engine, cores, 4, Time::ms(1), op[4]);
    compute_then_wait(engine, cores, 3, Time::ms(1), op[3]);
    EXPECT_EQ(cores.waiting(), 2);
    EXPECT_EQ(cores.busy(), 2);
  });
  engine.run();
  EXPECT_EQ(op[0].started, Time{});
  EXPECT_EQ(op[2].started, Time::ms(1));
  EXPECT_EQ(op[2].ended, Time::ms(3));
  EXPECT_EQ(op[4].started, Time::ms(3));
  EXPECT_EQ(op[4].ended, Time::ms(4));
  EXPECT_EQ(op[3].started, Time::us(500));
  EXPECT_EQ(cores.busy(), 0);
  EXPECT_EQ(cores.waiting(), 0);
}

// One core. Rank 0 computes ops of 1 ms back to back; rank 1 asks at 0.5 ms. Rank 0 keeps the core
// for its second op (it has held it 1 ms, under its 1.5 ms slice) and hands it over when it asks for
// its third (2 ms held): rank 1 runs from 2 ms; rank 0 waits at the back and has it again at 3 ms.
TEST(CoreSharing, ARankKeepsItsCoreFromOpToOpUntilItsSliceIsOver) {
  Engine engine;
  CoreSharing cores(engine, 1, 2, kSlice);
  std::vector<Time> rank0_started;
  Op rank1;
  std::function<void()> next = [&] {
    cores.acquire(0, [&] {
      rank0_started.push_back(engine.now());
      if (rank0_started.size() < 3) engine.schedule_after(Time::ms(1), next);
    });
  };
  next();
  engine.schedule_at(Time::us(500), [&] { compute_then_wait(engine, cores, 1, Time::ms(1), rank1); });
  engine.run();
  ASSERT_EQ(rank0_started.size(), 3U);
  EXPECT_EQ(rank0_started[1], Time::ms(1));
  EXPECT_EQ(rank1.started, Time::ms(2));
  EXPECT_EQ(rank0_started[2], Time::ms(3));
}

// A rank keeps its core past its slice where nobody waits.
TEST(CoreSharing, ASliceEndsOnlyForAnotherRank) {
  Engine engine;
  CoreSharing cores(engine, 1, 2, kSlice);
  bool again = false;
  cores.acquire(0, [] {});
  engine.schedule_at(Time::ms(5), [&] { cores.acquire(0, [&] { again = true; }); });
  engine.run();
  EXPECT_TRUE(again);
  EXPECT_TRUE(cores.holds(0));
}

TEST(CoreSharing, RejectsWhatItCannotSchedule) {
  Engine engine;
  EXPECT_THROW(CoreSharing(engine, 0, 2, kSlice), InvalidArgument);
  EXPECT_THROW(CoreSharing(engine, 2, 0, kSlice), InvalidArgument);
  EXPECT_THROW(CoreSharing(engine, 2, 2, Time{}), InvalidArgument);
  CoreSharing cores(engine, 1, 2, kSlice);
  EXPECT_THROW(cores.acquire(2, [] {}), InvalidArgument);
  cores.acquire(0, [] {});
  cores.acquire(1, [] {});
  EXPECT_THROW(cores.acquire(1, [] {}), InvalidArgument) << "rank 1 waits already";
}

// Linux's base slice, 0.75 ms, times 1 + log2 of the CPUs up to 8.
TEST(CoreSharing, LinuxSliceGrowsWithTheLogOfTheCpus) {
  EXPECT_EQ(CoreSharing::linux_slice(1), Time::ms(0.75));
  EXPECT_EQ(CoreSharing::linux_slice(2), Time::ms(1.5));
  EXPECT_EQ(CoreSharing::linux_slice(4), Time::ms(2.25));
  EXPECT_EQ(CoreSharing::linux_slice(8), Time::ms(3));
  EXPECT_EQ(CoreSharing::linux_slice(64), Time::ms(3));
}
