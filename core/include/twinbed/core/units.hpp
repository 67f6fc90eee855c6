// Units of the whole project: simulated time, byte counts and bandwidth.
//
// Time is an integer number of picoseconds, so simulated clocks are exact, comparisons are total and
// identical runs give bit-identical results. int64 picoseconds cover ±106 days; every conversion and
// every sum, difference and product of Times is checked against that range (InvalidArgument, never a
// wrapped value).
// Bytes is a plain integer count. Bandwidth is always bytes per second in code (`BytesPerSec`);
// only the edges (CLI flags, JSON keys) speak GB/s or Gbit/s, and their names say so.
#pragma once

#include <compare>
#include <cstdint>
#include <string>

namespace twinbed {

using Bytes = std::int64_t;        // a byte count (signed so differences are safe)
using BytesPerSec = double;        // bandwidth, bytes per second
using FlopsPerSec = double;        // compute rate, floating-point operations per second

inline constexpr Bytes KiB = 1024;
inline constexpr Bytes MiB = 1024 * KiB;
inline constexpr Bytes GiB = 1024 * MiB;
inline constexpr double GBps = 1e9;  // 1 GB/s in bytes per second (decimal, as link speeds are quoted)

// The largest |duration| in picoseconds a Time holds (int64, rounded down to a double that fits).
inline constexpr double kMaxPicoseconds = 9.2e18;
[[noreturn]] void throw_beyond_clock(double seconds);

class Time {
 public:
  constexpr Time() = default;
  static constexpr Time ps(std::int64_t v) { return Time(v); }
  static constexpr Time ns(double v) { return from_seconds(v * 1e-9); }
  static constexpr Time us(double v) { return from_seconds(v * 1e-6); }
  static constexpr Time ms(double v) { return from_seconds(v * 1e-3); }
  static constexpr Time s(double v) { return from_seconds(v); }
  // Rounds to the nearest picosecond. A duration beyond the clock (about ±106 days) or NaN throws
  // InvalidArgument saying so, never wraps.
  static constexpr Time from_seconds(double sec) {
    double p = sec * 1e12;
    if (!(p < kMaxPicoseconds && p > -kMaxPicoseconds)) throw_beyond_clock(sec);
    return Time(static_cast<std::int64_t>(p < 0 ? p - 0.5 : p + 0.5));
  }
  static constexpr Time max() { return Time(INT64_MAX); }

  constexpr std::int64_t picoseconds() const { return ps_; }
  constexpr double seconds() const { return static_cast<double>(ps_) * 1e-12; }
  constexpr double microseconds() const { return static_cast<double>(ps_) * 1e-6; }

  // Arithmetic is checked: a result beyond int64 picoseconds throws InvalidArgument ("beyond twinbed's
  // clock", naming the duration) instead of wrapping, so an out-of-proportion input can never print a
  // wrong time.
  constexpr Time operator+(Time o) const {
    std::int64_t r = 0;
    if (__builtin_add_overflow(ps_, o.ps_, &r)) throw_beyond_clock(seconds() + o.seconds());
    return Time(r);
  }
  constexpr Time operator-(Time o) const {
    std::int64_t r = 0;
    if (__builtin_sub_overflow(ps_, o.ps_, &r)) throw_beyond_clock(seconds() - o.seconds());
    return Time(r);
  }
  constexpr Time& operator+=(Time o) { return *this = *this + o; }
  constexpr Time& operator-=(Time o) { return *this = *this - o; }
  constexpr Time operator*(std::int64_t k) const {
    std::int64_t r = 0;
    if (__builtin_mul_overflow(ps_, k, &r)) throw_beyond_clock(seconds() * static_cast<double>(k));
    return Time(r);
  }
  constexpr auto operator<=>(const Time&) const = default;

 private:
  constexpr explicit Time(std::int64_t v) : ps_(v) {}
  std::int64_t ps_ = 0;
};

// Time to move `bytes` at `bw`, rounded up to the next picosecond (never zero for a non-empty transfer).
Time transfer_time(Bytes bytes, BytesPerSec bw);
// The same for a fractional byte count (what a flow has left to drain); transfer_time(b, bw) ==
// drain_time(b, bw), so every model rounds the same way.
Time drain_time(double bytes, BytesPerSec bw);

// "1K" -> 1024, "4M", "1G", "512" (binary multiples, as nccl-tests reads sizes), at most 2^50 (1 PiB).
// Throws InvalidArgument.
Bytes parse_size(const std::string& text);
// 1024 -> "1K"-style text when exact, else the plain number (for tables).
std::string format_size(Bytes b);

}  // namespace twinbed
