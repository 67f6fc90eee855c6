#include "twinbed/core/collective_table.hpp"

#include <cstdio>

#include <nlohmann/json.hpp>

namespace twinbed {

CollectiveRow make_collective_row(CollectiveOp op, int ranks, Bytes size, Time time, std::string algorithm) {
  CollectiveRow row;
  row.size_bytes = size;
  row.count = size / 4;
  row.time_us = time.microseconds();
  double seconds = time.seconds();
  row.algbw_GBps = seconds > 0 ? static_cast<double>(size) / seconds / GBps : 0;
  row.busbw_GBps = row.algbw_GBps * busbw_factor(op, ranks);
  row.algorithm = std::move(algorithm);
  return row;
}

std::string format_collective_table(const std::vector<CollectiveRow>& rows) {
  bool has_wrong = false;
  for (const auto& r : rows) has_wrong |= r.wrong.has_value();
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "%14s %13s %6s %12s %12s %12s %-13s%s\n", "size(B)", "count", "type",
                "time(us)", "algbw(GB/s)", "busbw(GB/s)", "  algorithm", has_wrong ? "  #wrong" : "");
  out += line;
  for (const auto& r : rows) {
    std::snprintf(line, sizeof line, "%14lld %13lld %6s %12.2f %12.2f %12.2f   %-11s", static_cast<long long>(r.size_bytes),
                  static_cast<long long>(r.count), r.type.c_str(), r.time_us, r.algbw_GBps, r.busbw_GBps,
                  r.algorithm.c_str());
    out += line;
    if (has_wrong) out += "  " + (r.wrong ? std::to_string(*r.wrong) : std::string("-"));
    out += "\n";
  }
  return out;
}

nlohmann::json collective_rows_to_json(const std::vector<CollectiveRow>& rows) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& r : rows) {
    nlohmann::json j = {{"size_bytes", r.size_bytes}, {"count", r.count},           {"type", r.type},
                        {"time_us", r.time_us},       {"algbw_GBps", r.algbw_GBps}, {"busbw_GBps", r.busbw_GBps},
                        {"algorithm", r.algorithm}};
    if (r.wrong) j["wrong"] = *r.wrong;
    out.push_back(std::move(j));
  }
  return out;
}

}  // namespace twinbed
