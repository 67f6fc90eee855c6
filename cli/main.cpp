// twinbed: one experiment, two backends. Only this file prints errors and chooses exit codes:
// 0 success, 1 a twinbed error (bad config, impossible request, missing hardware), 2 bad usage.
#include <cstdio>
#include <exception>
#include <string>

#include <CLI/CLI.hpp>

#include "commands.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/json_read.hpp"

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
  twinbed::cli::add_train_command(app, invocation);
  twinbed::cli::add_validate_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version: printed on stdout
    // Bad usage, on one line like every error (CLI11's own printing adds a second).
    std::string help = "twinbed";
    for (const CLI::App* sub : app.get_subcommands()) help += " " + sub->get_name();
    std::fprintf(stderr, "twinbed: error: %s (see `%s --help`)\n", twinbed::json_read::one_line(e.what()).c_str(),
                 help.c_str());
    return 2;
  } catch (const twinbed::Error& e) {
    std::fprintf(stderr, "twinbed: error: %s\n", twinbed::json_read::one_line(e.what()).c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "twinbed: internal error: %s\n", twinbed::json_read::one_line(e.what()).c_str());
    return 1;
  }
  return invocation.exit_code;
}
