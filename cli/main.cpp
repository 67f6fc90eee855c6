// twinbed: one experiment, two backends. Only this file prints errors and chooses exit codes:
// 0 success, 1 a twinbed error (bad config, impossible request, missing hardware), 2 bad usage.
#include <cstdio>
#include <exception>
#include <string>

#include <CLI/CLI.hpp>

#include "commands.hpp"
#include "twinbed/core/error.hpp"

namespace {

// Errors are one line: a control character from an input (a newline in a string value, a file name)
// is printed escaped, never raw.
std::string one_line(const char* message) {
  std::string out;
  for (const char* p = message; *p; ++p) {
    const auto c = static_cast<unsigned char>(*p);
    if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"twinbed: simulate and measure what large-model training techniques buy, on any cluster"};
  app.set_version_flag("--version", std::string("twinbed ") + TWINBED_VERSION);
  app.require_subcommand(1);
  twinbed::cli::Invocation invocation{argc, argv};
  twinbed::cli::add_collectives_command(app, invocation);
  twinbed::cli::add_list_command(app);
  twinbed::cli::add_calibrate_command(app, invocation);
  twinbed::cli::add_compare_command(app, invocation);
  twinbed::cli::add_run_command(app, invocation);
  twinbed::cli::add_sweep_command(app);
  twinbed::cli::add_claims_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const twinbed::Error& e) {
    std::fprintf(stderr, "twinbed: error: %s\n", one_line(e.what()).c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "twinbed: internal error: %s\n", one_line(e.what()).c_str());
    return 1;
  }
  return invocation.exit_code;
}
