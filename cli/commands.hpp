// The subcommands of the `twinbed` CLI. Each add_* registers its subcommand, options and callback;
// callbacks throw twinbed::Error on bad input and only main() prints errors and picks exit codes.
#pragma once

#include <CLI/CLI.hpp>

namespace twinbed::cli {

void add_collectives_command(CLI::App& app);
void add_list_command(CLI::App& app);

}  // namespace twinbed::cli
