// twinbed claims: the claims ledger — every figure of CLAIMS.md through its experiments
// (experiments/claims/<ID>.json), reported vs simulated vs measured, with a computed verdict.

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>

#include "commands.hpp"
#include "run_experiment.hpp"
#include "twinbed/claims/ledger.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/export.hpp"

namespace twinbed::cli {

namespace {

namespace fs = std::filesystem;

struct ClaimsOptions {
  std::vector<std::string> ids;
  std::string backend = "sim";
  std::string out = "results/claims";
  std::string dir;
  bool json = false;
  bool no_plot = false;
};

// experiments/claims under the working folder, else in the source tree the binary was built from.
std::string default_dir() {
  if (fs::is_directory("experiments/claims")) return "experiments/claims";
  return std::string(TWINBED_SOURCE_DIR) + "/experiments/claims";
}

void claims_command(const ClaimsOptions& o) {
  out_folder(o.out);
  if (o.backend != "sim") {
    throw ConfigError("--backend", "'" + o.backend + "': only sim is available; measured figures need the real backends "
                                   "to execute the techniques' plans, which they do not yet");
  }
  const std::vector<std::string> files = claims::claim_files(o.dir.empty() ? default_dir() : o.dir, o.ids);
  const bool tty = isatty(fileno(stderr));
  const auto results = claims::run_ledger(files, [&](const std::string& line) {
    if (!o.json) std::fprintf(stderr, "%s%s\n", tty ? "  " : "claims: ", line.c_str());
  });

  // Files first (each atomically, under the folder's lock), so the printed table always has them beside it.
  // A claims.png of an earlier ledger goes first: no plot is better than one of other results.
  const fs::path dir(o.out);
  const ResultsFolderLock lock(dir);
  const fs::path png = dir / "claims.png";
  std::error_code ec;
  fs::remove(png, ec);
  if (ec) throw Error("cannot remove the old " + png.string() + ": " + ec.message());
  nlohmann::json doc = claims::ledger_json(results);
  doc["format"] = "twinbed-claims-1";
  // The ledger's config (claim files, backend) sits beside the build and machine facts, as the notebook reads it.
  const RunProvenance p = make_provenance({{"claim_files", files}, {"backend", o.backend}}, git_revision(), twinbed_version());
  doc["provenance"] = {{"git_revision", p.git_revision}, {"twinbed_version", p.twinbed_version}, {"date", p.date}, {"hostname", p.hostname}};
  doc["provenance"].update(p.config);
  write_file_atomic(dir / "claims.json", doc.dump(2) + "\n");
  write_file_atomic(dir / "claims.csv", claims::ledger_csv(results));
  write_file_atomic(dir / "claims.md", claims::ledger_markdown(results));

  std::string plotted;
  if (!o.no_plot) {
    // The ledger stands without its plot: a failure is a note saying why, not an error.
    const std::string why = draw_plot("plot_claims.py", dir / "claims.json", png);
    if (why.empty()) plotted = ", claims.png";
    else std::fprintf(stderr, "twinbed: note: no plot: %s\n", why.c_str());
  }
  if (o.json) {
    std::cout << doc.dump(2) << "\n";
    return;
  }
  std::cout << claims::ledger_table(results) << "\n";
  std::printf("# wrote %s/{claims.json, claims.csv, claims.md%s}\n", dir.string().c_str(), plotted.c_str());
}

}  // namespace

void add_claims_command(CLI::App& app) {
  auto opts = std::make_shared<ClaimsOptions>();
  CLI::App* cmd = app.add_subcommand(
      "claims", "The claims ledger: every figure of CLAIMS.md through its experiments, reported vs simulated, with a verdict");
  cmd->add_option("ids", opts->ids, "Claim IDs (default: every file in the claims folder), e.g. TGC-AR DSA-FLOPS");
  cmd->add_option("--backend", opts->backend, "sim (the only one yet: measured figures come with the real backends)");
  cmd->add_option("--out", opts->out, "Results folder (default results/claims)");
  cmd->add_option("--dir", opts->dir,
                  "Folder of claim files (default: experiments/claims under the working folder when there is one, else " +
                      std::string(TWINBED_SOURCE_DIR) + "/experiments/claims)");
  cmd->add_flag("--json", opts->json, "Print the ledger as JSON instead of the table");
  cmd->add_flag("--no-plot", opts->no_plot, "Do not draw claims.png");
  cmd->callback([opts] { claims_command(*opts); });
}

}  // namespace twinbed::cli
