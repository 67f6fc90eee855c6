// The subcommands of the `twinbed` CLI. Each add_* registers its subcommand, options and callback;
// callbacks throw twinbed::Error on bad input and only main() prints errors and picks exit codes.
#pragma once

#include <CLI/CLI.hpp>

namespace twinbed::cli {

// What main hands to commands that need more than their flags: the raw argument vector (to relaunch
// the same command under mpirun) and the exit code a command wants main to return.
struct Invocation {
  int argc = 0;
  char** argv = nullptr;
  int exit_code = 0;
};

void add_collectives_command(CLI::App& app, Invocation& invocation);
void add_list_command(CLI::App& app);
void add_calibrate_command(CLI::App& app, Invocation& invocation);
void add_compare_command(CLI::App& app, Invocation& invocation);
void add_run_command(CLI::App& app, Invocation& invocation);
void add_sweep_command(CLI::App& app);
void add_claims_command(CLI::App& app);
void add_train_command(CLI::App& app, Invocation& invocation);
void add_validate_command(CLI::App& app);

}  // namespace twinbed::cli
