// libFuzzer target: machine profiles (what `twinbed calibrate` writes), parsed as the CLI reads them
// first (over an empty base); a profile that parses must read back from its own JSON.
#include "fuzz_target.hpp"
#include "twinbed/core/json_read.hpp"
#include "twinbed/core/profile.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return twinbed::fuzz::run_target(data, size, [](const std::string& text) {
    const twinbed::DeviceSpec device{};
    const twinbed::MachineProfile base{};
    const twinbed::MachineProfile p = twinbed::profile_from_json(twinbed::json_read::parse_json_text(text, "input"), base, device);
    const nlohmann::json written = twinbed::profile_to_json(p);
    if (twinbed::profile_to_json(twinbed::profile_from_json(written, base, device)) != written) {
      std::fprintf(stderr, "fuzz finding: a profile does not read back from its own JSON\n");
      std::abort();
    }
  });
}
