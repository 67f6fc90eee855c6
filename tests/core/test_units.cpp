#include <gtest/gtest.h>

#include <climits>
#include <string>

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

// Sums, differences and products beyond int64 picoseconds throw "beyond twinbed's clock" naming the
// duration; they never wrap (a 16 GiB ring all-reduce at 1 kB/s printed a wrapped, wrong time).
TEST(Time, ArithmeticBeyondTheClockThrows) {
  const Time big = Time::ps(INT64_MAX / 2 + 1);
  const auto expect_beyond = [](auto f, const char* duration) {
    try {
      f();
      FAIL() << "expected InvalidArgument";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("beyond twinbed's clock"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(duration), std::string::npos) << e.what();
    }
  };
  expect_beyond([&] { (void)(big + big); }, "a duration of 9.22e+06 s");
  expect_beyond([&] { Time t = big; t += big; }, "9.22e+06 s");
  expect_beyond([&] { (void)(Time{} - big - big - big); }, "-1.38e+07 s");
  expect_beyond([&] { Time t = Time{} - big; t -= big; t -= big; }, "-1.38e+07 s");
  expect_beyond([&] { (void)(big * 3); }, "1.38e+07 s");
  expect_beyond([&] { (void)(Time::ps(-1) * INT64_MIN); }, "9.22e+06 s");
  // Up to the edge, exact.
  EXPECT_EQ((Time::max() - big) + big, Time::max());
  EXPECT_EQ(Time::max() + Time{}, Time::max());
  EXPECT_EQ(Time::ps(INT64_MAX / 3) * 3, Time::ps(INT64_MAX / 3 * 3));
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
