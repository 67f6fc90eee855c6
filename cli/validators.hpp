// CLI11 validators whose messages say what a flag accepts ("expected an integer in 1..1048576
// (written like 8 or 1e3), got \"0\""), for the flags whose ranges configs share (topology_json.hpp): a flag and a config key accept
// the same. The value is shown through json_read::quoted, so a message is one line whatever was typed.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "twinbed/core/json_read.hpp"
#include "twinbed/core/topology_json.hpp"  // the ranges (kMaxCount, kMaxBandwidthGBps, ...)

namespace twinbed::cli {

// A decimal number: an optional sign, digits with an optional '.', an optional exponent ("8", "0.5",
// "1e3", "-2.5E-3"). Not hexadecimal, "inf", "nan" or surrounding spaces, which strtod would also take.
inline bool is_decimal_number(const std::string& text) {
  std::size_t i = 0;
  const auto digits = [&] {
    const std::size_t start = i;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') ++i;
    return i - start;
  };
  if (i < text.size() && (text[i] == '+' || text[i] == '-')) ++i;
  std::size_t mantissa = digits();
  if (i < text.size() && text[i] == '.') {
    ++i;
    mantissa += digits();
  }
  if (mantissa == 0) return false;
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    ++i;
    if (i < text.size() && (text[i] == '+' || text[i] == '-')) ++i;
    if (digits() == 0) return false;
  }
  return i == text.size();
}

// A number in [min, max]; `integer` also requires a whole number. Every decimal form is accepted alike,
// exponents included ("--ranks 1e3" is 1000): the validator rewrites the value in the plain form CLI11
// converts, so it must be added with ->transform (->check would drop the rewrite, and CLI11 would then
// refuse "1e3" for an integer with a message of its own).
inline CLI::Validator in_range(double min, double max, bool integer = false) {
  const std::string text = integer ? "an integer in " + json_read::number_text(min) + ".." + json_read::number_text(max)
                                   : "a number in " + json_read::number_range(min, max);
  const std::string form = integer ? " (written like 8 or 1e3)" : " (written like 8, 0.5 or 1e-3)";
  return CLI::Validator(
      [=](std::string& value) -> std::string {
        const double v = is_decimal_number(value) ? std::strtod(value.c_str(), nullptr) : NAN;
        const bool ok = std::isfinite(v) && v >= min && v <= max && (!integer || v == std::floor(v));
        if (!ok) return "expected " + text + form + ", got " + json_read::quoted(value);
        if (integer) {
          value = std::to_string(static_cast<long long>(v));
        } else {
          char buf[32];
          std::snprintf(buf, sizeof buf, "%.17g", v);
          value = buf;
        }
        return std::string();
      },
      text);
}

// One of `accepted` (CLI::IsMember's message shows the value raw).
inline CLI::Validator one_of(const std::vector<std::string>& accepted) {
  const std::string text = json_read::join(accepted);
  return CLI::Validator(
      [=](std::string& value) -> std::string {
        if (std::find(accepted.begin(), accepted.end(), value) != accepted.end()) return std::string();
        return "expected one of " + text + ", got " + json_read::quoted(value);
      },
      "one of " + text);
}

}  // namespace twinbed::cli
