// What every libFuzzer target here shares: the input as text, and the one rule they check besides the
// sanitizers' — a parser given any bytes either returns or throws twinbed::Error (a named error the CLI
// prints). Any other exception is a finding: it would reach the user as raw library text.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "twinbed/core/error.hpp"

namespace twinbed::fuzz {

template <typename Body>
int run_target(const std::uint8_t* data, std::size_t size, Body&& body) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    body(text);
  } catch (const twinbed::Error&) {
    // A named error: what bad input should give.
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz finding: an exception that is not twinbed::Error escaped: %s\n", e.what());
    std::abort();
  }
  return 0;
}

}  // namespace twinbed::fuzz
