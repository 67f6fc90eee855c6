// libFuzzer target: sweeps. Bytes -> JSON -> the points of its "sweep"; every point's id is unique
// (the sweep resumes by id) and its config has no "sweep".
#include <filesystem>
#include <set>

#include "fuzz_target.hpp"
#include "twinbed/core/experiment.hpp"
#include "twinbed/core/json_read.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return twinbed::fuzz::run_target(data, size, [](const std::string& text) {
    const auto points = twinbed::expand_sweep(twinbed::json_read::parse_json_text(text, "input"), std::filesystem::current_path());
    std::set<std::string> ids;
    for (const twinbed::SweepPoint& p : points) {
      if (!ids.insert(p.id).second || p.config.contains("sweep")) {
        std::fprintf(stderr, "fuzz finding: sweep point '%s' repeats an id or keeps its sweep\n", p.id.c_str());
        std::abort();
      }
    }
  });
}
