// CLI11 validators whose messages say what a flag accepts ("expected an integer in 1..1048576, got 0"),
// for the flags whose ranges configs share (topology_json.hpp): a flag and a config key accept the same.
#pragma once

#include <cmath>
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "twinbed/core/topology_json.hpp"  // the ranges (kMaxCount, kMaxBandwidthGBps, ...)

namespace twinbed::cli {

// A number in [min, max]; `integer` also requires a whole number.
inline CLI::Validator in_range(double min, double max, bool integer = false) {
  char range[96];
  std::snprintf(range, sizeof range, integer ? "an integer in %.0f..%.0f" : "a number in [%g, %g]", min, max);
  const std::string text = range;
  return CLI::Validator(
      [=](std::string& value) -> std::string {
        char* end = nullptr;
        const double v = std::strtod(value.c_str(), &end);
        const bool ok = end && *end == '\0' && !value.empty() && std::isfinite(v) && v >= min && v <= max &&
                        (!integer || v == std::floor(v));
        return ok ? std::string() : "expected " + text + ", got " + value;
      },
      text);
}

}  // namespace twinbed::cli
