// The one table of collective results, printed the same way for simulated and measured runs, like
// nccl-tests: size, count, type, time, algbw, busbw (and #wrong where data was checked).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "twinbed/core/schedule.hpp"
#include "twinbed/core/units.hpp"

namespace twinbed {

struct CollectiveRow {
  Bytes size_bytes = 0;          // nccl-tests' S (see CollectiveRequest::bytes)
  std::int64_t count = 0;        // elements of `type` in S
  std::string type = "float";
  double time_us = 0;
  double algbw_GBps = 0;         // S / time
  double busbw_GBps = 0;         // algbw x busbw_factor(op, ranks)
  std::string algorithm;         // the algorithm that ran (useful when "auto" chose it)
  std::optional<std::int64_t> wrong;  // elements that differ from the expected result; real runs only
  bool operator==(const CollectiveRow&) const = default;
};

// Fills count, algbw and busbw from the size and time. Elements are 4-byte floats.
CollectiveRow make_collective_row(CollectiveOp op, int ranks, Bytes size, Time time, std::string algorithm);

// Fixed-width text table with a header line; one row per size.
std::string format_collective_table(const std::vector<CollectiveRow>& rows);
// [{"size_bytes":..., "count":..., "type":..., "time_us":..., "algbw_GBps":..., "busbw_GBps":...,
//   "algorithm":...}, ...] ("wrong" only where measured).
nlohmann::json collective_rows_to_json(const std::vector<CollectiveRow>& rows);

}  // namespace twinbed
