// twinbed claims: the claims ledger — every figure of CLAIMS.md through its experiments
// (experiments/claims/<ID>.json), reported vs simulated vs measured, with a computed verdict. The
// measured figures come from `twinbed train` runs: results of the config as it is now are reused, and
// missing ones are trained first by this same binary (unless --no-train).

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <optional>

#include "commands.hpp"
#include "run_experiment.hpp"
#include "twinbed/claims/ledger.hpp"
#include "twinbed/claims/measured.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/export.hpp"
#include "twinbed/core/json_read.hpp"
#include "twinbed/train/train_config.hpp"

extern char** environ;  // POSIX: the process environment, handed unchanged to the training run

namespace twinbed::cli {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct ClaimsOptions {
  std::vector<std::string> ids;
  std::string backend = "sim";
  std::string out = "results/claims";
  std::string dir;
  bool json = false;
  bool no_plot = false;
  bool no_train = false;
  bool retrain = false;
};

// The results of a `twinbed train` run of `c` in its output folder when they are of the config as it is
// now (format twinbed-train-1, provenance.config equal to the resolved config); nullopt otherwise —
// none, unreadable, another format or another config.
std::optional<json> current_results(const train::TrainConfig& c) {
  const fs::path file = fs::path(c.output) / "train.json";
  std::error_code ec;
  if (!fs::exists(file, ec)) return std::nullopt;
  json j;
  try {
    j = json_read::read_json_file(file.string(), "training results");
  } catch (const Error&) {
    return std::nullopt;
  }
  const json* format = json_read::find_pointer(j, "/format");
  const json* config = json_read::find_pointer(j, "/provenance/config");
  if (!format || *format != "twinbed-train-1" || !config || *config != train::train_config_to_json(c)) return std::nullopt;
  return j;
}

// Runs `twinbed train <config>` with this same binary (no shell) and waits for it. Its progress and its
// table go to stderr, so stdout keeps the ledger alone (--json).
void run_training(const std::string& config, const std::string& shown) {
  std::error_code ec;
  const std::string exe = fs::read_symlink("/proc/self/exe", ec).string();
  if (ec) throw Error("cannot resolve /proc/self/exe to train " + shown + ": " + ec.message());
  std::vector<std::string> argv = {exe, "train", config};
  std::vector<char*> args;
  for (std::string& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, 2, 1);
  pid_t pid = 0;
  const int spawned = ::posix_spawn(&pid, exe.c_str(), &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) throw Error("cannot start `twinbed train " + shown + "`: " + std::strerror(spawned));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw Error("waiting for `twinbed train " + shown + "` failed: " + std::strerror(errno));
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return;
  const std::string how = WIFSIGNALED(status) ? "was killed by signal " + std::to_string(WTERMSIG(status))
                                              : "failed with exit status " + std::to_string(WEXITSTATUS(status));
  throw Error("`twinbed train " + shown + "` " + how + " (its output is above); the measured figures need it, or --no-train");
}

// A path as typed from the working folder: relative below it, else absolute.
std::string shown_path(const std::string& absolute) {
  std::error_code ec;
  const fs::path relative = fs::path(absolute).lexically_relative(fs::current_path(ec));
  if (ec || relative.empty() || *relative.begin() == "..") return absolute;
  return relative.string();
}

// The results of every training config the claims measure on (absolute path -> train.json): reused
// when current, trained when not (unless --no-train; always with --retrain).
std::map<std::string, json> training_results(const std::vector<std::string>& claim_files, const ClaimsOptions& o) {
  std::map<std::string, json> out;
  for (const std::string& config : claims::train_configs(claim_files)) {
    const std::string shown = shown_path(config);
    train::TrainConfig c;
    try {
      c = train::load_train_config(config);
    } catch (const ConfigError& e) {
      throw ConfigError(e.path(), e.message() + " (in " + config + ")");
    }
    std::optional<json> results = o.retrain ? std::nullopt : current_results(c);
    if (!results && !o.no_train) {
      const int minutes = claims::training_minutes(config);
      std::fprintf(stderr, "claims: training %s for the measured figures (about %d minute%s; --no-train skips)\n", shown.c_str(),
                   minutes, minutes == 1 ? "" : "s");
      run_training(config, shown);
      results = current_results(c);
      if (!results) throw Error("`twinbed train " + shown + "` left no results of this config in " + c.output + "/train.json");
    }
    if (results) out.emplace(config, std::move(*results));
  }
  return out;
}

// experiments/claims under the working folder, else in the source tree the binary was built from.
std::string default_dir() {
  if (fs::is_directory("experiments/claims")) return "experiments/claims";
  return std::string(TWINBED_SOURCE_DIR) + "/experiments/claims";
}

void claims_command(const ClaimsOptions& o) {
  out_folder(o.out);
  if (o.backend != "sim") {
    throw ConfigError("--backend", "'" + o.backend + "': only sim is available; the measured figures come from `twinbed train` "
                                   "runs, not from a backend executing the techniques' plans");
  }
  const std::vector<std::string> files = claims::claim_files(o.dir.empty() ? default_dir() : o.dir, o.ids);
  const std::map<std::string, json> trained = training_results(files, o);
  const bool tty = isatty(fileno(stderr));
  claims::LedgerOptions options;
  options.progress = [&](const std::string& line) {
    if (!o.json) std::fprintf(stderr, "%s%s\n", tty ? "  " : "claims: ", line.c_str());
  };
  options.train_results = [&](const std::string& config) -> std::optional<json> {
    const auto it = trained.find(config);
    if (it == trained.end()) return std::nullopt;
    return it->second;
  };
  const auto results = claims::run_ledger(files, options);

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
  // The training runs the measured figures come from.
  json runs = json::array();
  for (const auto& [config, train_json] : trained) {
    const json& tp = train_json["provenance"];
    runs.push_back({{"config", config},
                    {"results", (fs::path(train::load_train_config(config).output) / "train.json").string()},
                    {"git_revision", tp.value("git_revision", "")},
                    {"date", tp.value("date", "")}});
  }
  doc["provenance"]["train_runs"] = runs;
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
      "claims",
      "The claims ledger: every figure of CLAIMS.md through its experiments, reported vs simulated vs measured (in "
      "`twinbed train` runs, trained first when their results are missing or stale), with a verdict");
  cmd->add_option("ids", opts->ids, "Claim IDs (default: every file in the claims folder), e.g. TGC-AR DSA-FLOPS");
  cmd->add_option("--backend", opts->backend, "sim (the only one; the measured figures come from `twinbed train` runs)");
  cmd->add_option("--out", opts->out, "Results folder (default results/claims)");
  cmd->add_option("--dir", opts->dir,
                  "Folder of claim files (default: experiments/claims under the working folder when there is one, else " +
                      std::string(TWINBED_SOURCE_DIR) + "/experiments/claims)");
  cmd->add_flag("--json", opts->json, "Print the ledger as JSON instead of the table");
  cmd->add_flag("--no-plot", opts->no_plot, "Do not draw claims.png");
  auto* no_train = cmd->add_flag("--no-train", opts->no_train,
                                 "Never train: figures whose training results are missing or stale are 'not measured yet'");
  cmd->add_flag("--retrain", opts->retrain, "Train the configs the measured figures name even when their results are current")
      ->excludes(no_train);
  cmd->callback([opts] { claims_command(*opts); });
}

}  // namespace twinbed::cli
