// libFuzzer target: validation data files (experiments/validation/, `twinbed validate --data`). Bytes ->
// JSON -> the rows of a collectives file, then of a training file; a collective row that parses on a
// machine of at most 64 ranks is also simulated (NCCL's model or the flow network), whose figure must
// be a finite number, not negative.
#include <cmath>

#include "fuzz_target.hpp"
#include "twinbed/core/json_read.hpp"
#include "twinbed/validate/validate.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return twinbed::fuzz::run_target(data, size, [](const std::string& text) {
    namespace v = twinbed::validation;
    const nlohmann::json j = twinbed::json_read::parse_json_text(text, "input");
    try {
      for (const v::CollectiveCase& c : v::collectives_from_json(j, "collectives/input.json")) {
        if (c.ranks > 64) continue;
        const v::RowResult r = v::simulate(c);
        if (!std::isfinite(r.simulated) || r.simulated < 0) {
          std::fprintf(stderr, "fuzz finding: row %s simulated as %g\n", c.id.c_str(), r.simulated);
          std::abort();
        }
      }
    } catch (const twinbed::Error&) {
      // A named error for a bad collectives file; the same bytes go on to the training parser.
    }
    static_cast<void>(v::training_from_json(j, "training/input.json"));
  });
}
