// libFuzzer target: topology files. Bytes -> JSON -> Topology; a topology that parses must route
// between its first and last rank (the parser promises every rank reaches every other).
#include "fuzz_target.hpp"
#include "twinbed/core/json_read.hpp"
#include "twinbed/core/topology.hpp"
#include "twinbed/core/topology_json.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return twinbed::fuzz::run_target(data, size, [](const std::string& text) {
    const twinbed::Topology t = twinbed::topology_from_json(twinbed::json_read::parse_json_text(text, "input"));
    if (t.num_ranks() > 1 && t.route(0, t.num_ranks() - 1).empty()) {
      std::fprintf(stderr, "fuzz finding: a parsed topology has no route from rank 0 to the last\n");
      std::abort();
    }
  });
}
