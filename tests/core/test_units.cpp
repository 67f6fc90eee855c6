#include <gtest/gtest.h>

#include "twinbed/core/error.hpp"
#include "twinbed/core/registry.hpp"
#include "twinbed/core/units.hpp"

using namespace twinbed;

TEST(Time, ConvertsAndRoundsToPicoseconds) {
  EXPECT_EQ(Time::us(1).picoseconds(), 1'000'000);
  EXPECT_EQ(Time::ns(1.4).picoseconds(), 1'400);
  EXPECT_EQ(Time::s(2).picoseconds(), 2'000'000'000'000);
  EXPECT_DOUBLE_EQ(Time::ms(3).seconds(), 3e-3);
  EXPECT_LT(Time::us(1), Time::us(2));
  EXPECT_EQ(Time::us(1) + Time::us(2), Time::us(3));
}

TEST(Time, TransferTimeRoundsUp) {
  EXPECT_EQ(transfer_time(100, 100.0 * GBps), Time::ns(1));
  EXPECT_EQ(transfer_time(1, 3e12).picoseconds(), 1);  // 0.33 ps rounds up, never to zero
  EXPECT_EQ(transfer_time(0, 1.0), Time{});
  EXPECT_THROW(transfer_time(10, 0.0), InvalidArgument);
}

TEST(Sizes, ParseAndFormat) {
  EXPECT_EQ(parse_size("1K"), 1024);
  EXPECT_EQ(parse_size("4M"), 4 * MiB);
  EXPECT_EQ(parse_size("1G"), GiB);
  EXPECT_EQ(parse_size("512"), 512);
  EXPECT_THROW(parse_size("1X"), InvalidArgument);
  EXPECT_THROW(parse_size("K"), InvalidArgument);
  EXPECT_EQ(format_size(4 * MiB), "4M");
  EXPECT_EQ(format_size(1000), "1000");
}

TEST(Registry, UnknownNameListsKnownOnes) {
  Registry<int> r("widget");
  r.add("a", "first", 1);
  r.add("b", "second", 2);
  EXPECT_EQ(r.get("b"), 2);
  EXPECT_THROW(r.add("a", "again", 3), InvalidArgument);
  try {
    r.get("c");
    FAIL() << "expected UnknownName";
  } catch (const UnknownName& e) {
    EXPECT_STREQ(e.what(), "unknown widget 'c'; known: a, b");
  }
}
