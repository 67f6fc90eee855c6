#include <gtest/gtest.h>

#include <functional>

#include "twinbed/core/topology_builders.hpp"
#include "twinbed/sim/engine.hpp"
#include "twinbed/sim/link_sharing.hpp"

using namespace twinbed;
using namespace twinbed::sim;

namespace {

// Two ranks on a switch; rank 0's uplink is link `up`. 100 GB/s.
struct Fixture {
  Topology topo = topo::single_switch(2, {100 * GBps, Time::us(1)}, device_preset("a100"));
  Engine engine;
  LinkSharing sharing{engine, topo};
  LinkId up = topo.route(0, 1, 0).front();
  LinkId down = topo.route(0, 1, 0).back();
};

}  // namespace

// Alone, or with company that fits, an activity takes exactly its alone time.
TEST(LinkSharing, AnActivityThatFitsTakesItsAloneTime) {
  Fixture f;
  const Footprint half{{f.up, 50e9 * 1e-3}};  // 50 GB/s for 1 ms: half the link
  Time a, b;
  f.sharing.start(Time::ms(1), &half, [&] { a = f.engine.now(); });
  f.sharing.start(Time::ms(1), &half, [&] { b = f.engine.now(); });
  f.engine.run();
  EXPECT_EQ(a, Time::ms(1));
  EXPECT_EQ(b, Time::ms(1));
}

// Two activities that each fill the link alone share it: each twice as slow.
TEST(LinkSharing, TwoOnOneFullLinkTakeTwiceAsLong) {
  Fixture f;
  const Footprint full{{f.up, 100e9 * 1e-3}};  // the whole link for 1 ms
  Time a, b;
  f.sharing.start(Time::ms(1), &full, [&] { a = f.engine.now(); });
  f.sharing.start(Time::ms(1), &full, [&] { b = f.engine.now(); });
  f.engine.run();
  EXPECT_EQ(a, Time::ms(2));
  EXPECT_EQ(b, Time::ms(2));
}

// On disjoint links nothing slows.
TEST(LinkSharing, DisjointLinksDoNotSlow) {
  Fixture f;
  const Footprint on_up{{f.up, 100e9 * 1e-3}};
  const Footprint on_down{{f.down, 100e9 * 1e-3}};
  Time a, b;
  f.sharing.start(Time::ms(1), &on_up, [&] { a = f.engine.now(); });
  f.sharing.start(Time::ms(1), &on_down, [&] { b = f.engine.now(); });
  f.engine.run();
  EXPECT_EQ(a, Time::ms(1));
  EXPECT_EQ(b, Time::ms(1));
  EXPECT_EQ(f.sharing.recomputations(), 0);
}

// Staggered: A runs alone for half its time, then shares with B at half speed each until A ends at
// 1.5 ms; B, half done by then, runs alone to 2 ms. The link carries every byte by 2 ms, as it must.
// The same whether B moves the same footprint as A or another one over the same link (A runs alone
// until B comes, and is entered on its link then).
TEST(LinkSharing, SpeedsFollowStartsAndEnds) {
  for (const bool same_footprint : {true, false}) {
    Fixture f;
    const Footprint full{{f.up, 100e9 * 1e-3}};
    const Footprint other = full;
    Time a, b;
    f.sharing.start(Time::ms(1), &full, [&] { a = f.engine.now(); });
    f.engine.schedule_at(Time::us(500), [&] {
      f.sharing.start(Time::ms(1), same_footprint ? &full : &other, [&] { b = f.engine.now(); });
    });
    f.engine.run();
    EXPECT_EQ(a, Time::us(1500)) << same_footprint;
    EXPECT_EQ(b, Time::ms(2)) << same_footprint;
  }
}

// A and C run alone on the uplink and the downlink; at 0.5 ms B comes, wanting both whole: all three
// run at half speed until A and C end at 1.5 ms, and B, half done, ends alone at 2 ms. The recomputation
// B starts also reaches C, whose link A never touched.
TEST(LinkSharing, AnActivityOverTwoBusyLinksSlowsBothOfThem) {
  Fixture f;
  const Footprint fa{{f.up, 100e9 * 1e-3}};
  const Footprint fb{{f.up, 100e9 * 1e-3}, {f.down, 100e9 * 1e-3}};
  const Footprint fc{{f.down, 100e9 * 1e-3}};
  Time a, b, c;
  f.sharing.start(Time::ms(1), &fa, [&] { a = f.engine.now(); });
  f.sharing.start(Time::ms(1), &fc, [&] { c = f.engine.now(); });
  f.engine.schedule_at(Time::us(500), [&] { f.sharing.start(Time::ms(1), &fb, [&] { b = f.engine.now(); }); });
  f.engine.run();
  EXPECT_EQ(a, Time::us(1500));
  EXPECT_EQ(c, Time::us(1500));
  EXPECT_EQ(b, Time::ms(2));
  EXPECT_EQ(f.sharing.active(), 0);
}

// What cannot meet another is never entered on its links: a hundred activities one after another on
// one footprint, or on two footprints over disjoint links, touch none; a second activity beside the
// first on a link enters both.
TEST(LinkSharing, OnlyActivitiesThatMightMeetAreEnteredOnTheirLinks) {
  Fixture f;
  const Footprint on_up{{f.up, 100e9 * 1e-3}};
  const Footprint on_down{{f.down, 100e9 * 1e-3}};
  int done = 0;
  std::function<void()> next = [&] {
    if (++done < 100) f.sharing.start(Time::ms(1), &on_up, next);
  };
  f.sharing.start(Time::ms(1), &on_up, next);
  f.sharing.start(Time::ms(1), &on_down, [] {});
  f.engine.run();
  EXPECT_EQ(done, 100);
  EXPECT_EQ(f.engine.now(), Time::ms(100));
  EXPECT_EQ(f.sharing.entered(), 0);

  f.sharing.start(Time::ms(1), &on_up, [] {});
  f.sharing.start(Time::ms(1), &on_up, [] {});
  f.engine.run();
  EXPECT_EQ(f.sharing.entered(), 2);
}

// Max-min, weighted by demand: a small activity and a big one on a full link are slowed alike, and an
// activity held back elsewhere leaves the rest of a link to the others.
TEST(LinkSharing, ALinkIsSharedByDemandAndLeftoversGoToTheOthers) {
  Fixture f;
  // A wants the whole uplink; B wants half the uplink and the whole downlink, which C also wants.
  // The downlink fills first at speed 1/2 (B and C); B then uses a quarter of the uplink, and A gets
  // the remaining three quarters: speed 3/4.
  const Footprint fa{{f.up, 100e9 * 1e-3}};
  const Footprint fb{{f.up, 50e9 * 1e-3}, {f.down, 100e9 * 1e-3}};
  const Footprint fc{{f.down, 100e9 * 1e-3}};
  Time a, b, c;
  f.sharing.start(Time::ms(1), &fa, [&] { a = f.engine.now(); });
  f.sharing.start(Time::ms(1), &fb, [&] { b = f.engine.now(); });
  f.sharing.start(Time::ms(1), &fc, [&] { c = f.engine.now(); });
  f.engine.run();
  EXPECT_EQ(b, Time::ms(2));
  EXPECT_EQ(c, Time::ms(2));
  // A: at 3/4 speed it would end at 4/3 ms, before B and C, so their speeds never change under it.
  EXPECT_NEAR(a.seconds(), 1e-3 / 0.75, 1e-12);
}

// A footprint that asks more of a link than the link has is held to the link's rate once it meets
// another activity, even on a link only it uses: A wants twice the uplink (ceiling 1/2) and a tenth of
// the downlink, which B wants whole. A stops at 1/2 and takes 5 % of the downlink, B gets the other
// 95 %; when B ends A keeps its ceiling.
TEST(LinkSharing, AnActivityIsHeldToItsOwnLinksInCompany) {
  Fixture f;
  const Footprint fa{{f.up, 200e9 * 1e-3}, {f.down, 10e9 * 1e-3}};
  const Footprint fb{{f.down, 100e9 * 1e-3}};
  Time a, b;
  f.sharing.start(Time::ms(1), &fa, [&] { a = f.engine.now(); });
  f.sharing.start(Time::ms(1), &fb, [&] { b = f.engine.now(); });
  f.engine.run();
  EXPECT_NEAR(b.seconds(), 1e-3 / 0.95, 1e-12);
  EXPECT_NEAR(a.seconds(), 2e-3, 1e-12);
}

// Two activities that share one link of many are slowed by that link alone: the links each has to
// itself, however many and however busy, leave the speeds what the shared link gives.
TEST(LinkSharing, OnlySharedLinksSetTheSpeeds) {
  Topology topo = topo::single_switch(64, {100 * GBps, Time::us(1)}, device_preset("a100"));
  Engine engine;
  LinkSharing sharing{engine, topo};
  const LinkId shared = topo.route(0, 1, 0).front();  // rank 0's uplink
  // A: 2 ms alone, 100 GB/s of the shared uplink and 90 GB/s of every other rank's uplink; B: 1 ms
  // alone, 50 GB/s of the shared uplink and 90 GB/s of every other rank's downlink.
  Footprint fa{{shared, 100e9 * 2e-3}};
  Footprint fb{{shared, 50e9 * 1e-3}};
  for (int r = 1; r < 64; ++r) {
    fa.push_back({topo.route(r, 0, 0).front(), 90e9 * 2e-3});
    fb.push_back({topo.route(0, r, 0).back(), 90e9 * 1e-3});
  }
  Time a, b;
  sharing.start(Time::ms(2), &fa, [&] { a = engine.now(); });
  sharing.start(Time::ms(1), &fb, [&] { b = engine.now(); });
  engine.run();
  // The shared uplink asks 150 GB/s of 100: both run at 2/3 until B ends at 1.5 ms; A, 1 ms of its
  // 2 done by then, runs the rest alone: 2.5 ms.
  EXPECT_NEAR(b.seconds(), 1.5e-3, 1e-12);
  EXPECT_NEAR(a.seconds(), 2.5e-3, 1e-12);
  EXPECT_EQ(sharing.recomputations(), 2);  // B's start and its end
}
