// libFuzzer target: experiment configs. Bytes -> JSON -> Experiment; a config that parses must read
// back from its resolved form to the same experiment (what `twinbed run` writes as config.json).
#include <filesystem>

#include "fuzz_target.hpp"
#include "twinbed/core/experiment.hpp"
#include "twinbed/core/json_read.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return twinbed::fuzz::run_target(data, size, [](const std::string& text) {
    const std::filesystem::path here = std::filesystem::current_path();
    const twinbed::Experiment e = twinbed::experiment_from_json(twinbed::json_read::parse_json_text(text, "input"), here);
    const nlohmann::json again = twinbed::resolved(e);
    if (twinbed::resolved(twinbed::experiment_from_json(again, here)) != again) {
      std::fprintf(stderr, "fuzz finding: resolved(experiment_from_json(resolved(e))) != resolved(e)\n");
      std::abort();
    }
  });
}
