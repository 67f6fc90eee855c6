#include <gtest/gtest.h>

#include <vector>

#include "twinbed/core/error.hpp"
#include "twinbed/sim/engine.hpp"

using namespace twinbed;
using sim::Engine;

TEST(Engine, RunsEventsInTimeOrderAndTiesInInsertionOrder) {
  Engine e;
  std::vector<int> order;
  e.schedule_at(Time::ns(5), [&] { order.push_back(3); });
  e.schedule_at(Time::ns(1), [&] { order.push_back(1); });
  e.schedule_at(Time::ns(5), [&] { order.push_back(4); });
  e.schedule_at(Time::ns(1), [&] { order.push_back(2); });
  e.run();
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3, 4}));
  EXPECT_EQ(e.now(), Time::ns(5));
  EXPECT_EQ(e.events_run(), 4u);
}

TEST(Engine, EventsScheduledFromEventsAtTheSameTimeRunAfterTheQueuedOnes) {
  Engine e;
  std::vector<int> order;
  e.schedule_at(Time::ns(1), [&] {
    order.push_back(1);
    e.schedule_after(Time{}, [&] { order.push_back(3); });
  });
  e.schedule_at(Time::ns(1), [&] { order.push_back(2); });
  e.run();
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
}

TEST(Engine, RefusesThePast) {
  Engine e;
  e.schedule_at(Time::ns(10), [] {});
  e.step();
  EXPECT_THROW(e.schedule_at(Time::ns(9), [] {}), InvalidArgument);
  EXPECT_FALSE(e.step());
}

TEST(Engine, ManyInterleavedEventsComeOutSorted) {
  Engine e;
  std::vector<std::int64_t> seen;
  std::uint64_t x = 12345;
  for (int i = 0; i < 10000; ++i) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    auto t = static_cast<std::int64_t>(x >> 44);
    e.schedule_at(Time::ps(t), [&seen, &e] { seen.push_back(e.now().picoseconds()); });
  }
  e.run();
  ASSERT_EQ(seen.size(), 10000u);
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
}
