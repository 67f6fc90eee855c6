// CoreSharing: compute ops of ranks that share a machine's cores take them in turn, first come, first
// served, each running its alone time once it has one.
#include <gtest/gtest.h>

#include <vector>

#include "twinbed/core/error.hpp"
#include "twinbed/sim/core_sharing.hpp"
#include "twinbed/sim/engine.hpp"

using namespace twinbed;
using namespace twinbed::sim;

namespace {

// When an op got its core and when it ended.
struct Ran {
  Time started, ended;
};

}  // namespace

// As many ops as cores, or fewer: each runs from now for its alone time.
TEST(CoreSharing, OpsThatFindAFreeCoreTakeTheirAloneTime) {
  Engine engine;
  CoreSharing cores(engine, 2);
  Ran a, b;
  cores.start(Time::ms(1), [&](Time s) { a = {s, engine.now()}; });
  cores.start(Time::ms(3), [&](Time s) { b = {s, engine.now()}; });
  EXPECT_EQ(cores.running(), 2);
  EXPECT_EQ(cores.waiting(), 0);
  engine.run();
  EXPECT_EQ(a.started, Time{});
  EXPECT_EQ(a.ended, Time::ms(1));
  EXPECT_EQ(b.started, Time{});
  EXPECT_EQ(b.ended, Time::ms(3));
  EXPECT_EQ(cores.running(), 0);
}

// Three ops on two cores: the third waits for the first core to free (after 1 ms), then runs its 2 ms;
// a fourth, asked for later, waits behind it for the next core to free (the second op's, at 3 ms).
TEST(CoreSharing, AnOpWaitsForACoreFirstComeFirstServed) {
  Engine engine;
  CoreSharing cores(engine, 2);
  std::vector<Ran> ran(4);
  cores.start(Time::ms(1), [&](Time s) { ran[0] = {s, engine.now()}; });
  cores.start(Time::ms(3), [&](Time s) { ran[1] = {s, engine.now()}; });
  cores.start(Time::ms(2), [&](Time s) { ran[2] = {s, engine.now()}; });
  engine.schedule_at(Time::us(500), [&] {
    cores.start(Time::ms(1), [&](Time s) { ran[3] = {s, engine.now()}; });
    EXPECT_EQ(cores.waiting(), 2);
  });
  engine.run();
  EXPECT_EQ(ran[2].started, Time::ms(1));
  EXPECT_EQ(ran[2].ended, Time::ms(3));
  EXPECT_EQ(ran[3].started, Time::ms(3));
  EXPECT_EQ(ran[3].ended, Time::ms(4));
  EXPECT_EQ(cores.running(), 0);
  EXPECT_EQ(cores.waiting(), 0);
}

// A core freed goes to the op that waited, before the ending op's own follow-up (asked for in its
// callback) can take it: that one waits for the next core.
TEST(CoreSharing, AFreedCoreGoesToTheOpThatWaited) {
  Engine engine;
  CoreSharing cores(engine, 1);
  Ran waited, follow_up;
  cores.start(Time::ms(1), [&](Time) {
    cores.start(Time::ms(1), [&](Time s) { follow_up = {s, engine.now()}; });
  });
  cores.start(Time::ms(2), [&](Time s) { waited = {s, engine.now()}; });
  engine.run();
  EXPECT_EQ(waited.started, Time::ms(1));
  EXPECT_EQ(waited.ended, Time::ms(3));
  EXPECT_EQ(follow_up.started, Time::ms(3));
  EXPECT_EQ(follow_up.ended, Time::ms(4));
}

TEST(CoreSharing, NeedsACore) {
  Engine engine;
  EXPECT_THROW(CoreSharing(engine, 0), InvalidArgument);
}
