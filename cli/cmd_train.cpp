// twinbed train: a small GPT trained for real on CPU ranks over MPI, each variant of the config (the
// baseline and the techniques switched on by their "techniques" entries) on the same data; loss curves,
// bytes, step times and memory into a results folder, and a plot. Started by hand it relaunches itself
// under mpirun as the config's ranks; rank 0 prints and writes.
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>

#include "commands.hpp"
#include "run_experiment.hpp"
#include "validators.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/export.hpp"
#include "twinbed/core/json_read.hpp"
#include "twinbed/real/launch.hpp"
#include "twinbed/real/mpi.hpp"
#include "twinbed/train/train_output.hpp"
#include "twinbed/train/trainer.hpp"

namespace twinbed::cli {

namespace {

namespace fs = std::filesystem;
using train::TrainConfig;
using train::VariantResult;

struct TrainOptions {
  std::string config;
  std::optional<std::string> out;
  std::optional<int> ranks;
  std::optional<std::int64_t> steps;
  std::vector<std::string> variants;
  bool no_plot = false;
};

// The config with the command line's overrides: --ranks, --steps (every variant), --variant (a subset; a
// variant's "from" variant must be named too).
TrainConfig configure(const TrainOptions& o) {
  TrainConfig c = train::load_train_config(o.config);
  if (o.out) c.output = out_folder(*o.out);
  if (o.ranks) c.ranks = *o.ranks;
  for (train::Variant& v : c.variants) {
    if (o.steps) v.training.steps = *o.steps;
    if (v.training.global_batch % c.ranks != 0)
      throw ConfigError("--ranks", std::to_string(c.ranks) + " ranks do not split variant " + v.name +
                                       "'s global batch of " + std::to_string(v.training.global_batch));
  }
  if (!o.variants.empty()) {
    std::vector<train::Variant> chosen;
    for (const train::Variant& v : c.variants) {
      const bool named = std::find(o.variants.begin(), o.variants.end(), v.name) != o.variants.end();
      if (!named) continue;
      if (!v.from.empty() && std::none_of(o.variants.begin(), o.variants.end(), [&](const std::string& n) { return n == v.from; }))
        throw ConfigError("--variant", v.name + " starts from " + v.from + ": name it too");
      chosen.push_back(v);
    }
    for (const std::string& n : o.variants)
      if (std::none_of(chosen.begin(), chosen.end(), [&](const train::Variant& v) { return v.name == n; })) {
        std::string names;
        for (const train::Variant& v : c.variants) names += (names.empty() ? "" : ", ") + v.name;
        throw ConfigError("--variant", json_read::quoted(n) + " is not a variant of the config; it has " + names);
      }
    c.variants = std::move(chosen);
  }
  return c;
}

std::string techniques_text(const train::Variant& v) {
  if (v.techniques.empty()) return v.from.empty() && v.checkpoint.empty() ? "baseline" : "full fine-tune";
  std::string text;
  for (const TechniqueConfig& t : v.techniques) text += (text.empty() ? "" : " + ") + t.pass;
  return text;
}

void print_summary(const TrainConfig& c, const std::vector<VariantResult>& results, const fs::path& dir, bool plotted) {
  std::printf("# twinbed train: %s — GPT %d layers, hidden %d, %d heads, seq %d; %d ranks (%s); held-out every %d-th fortune\n",
              c.name.c_str(), c.model.layers, c.model.hidden, c.model.heads, c.model.seq_len, c.ranks,
              c.collective_algorithm.c_str(), c.data.held_out_every);
  std::printf("%-20s %-22s %6s %10s %8s %9s %12s %11s %9s\n", "variant", "techniques", "steps", "held-out", "acc %",
              "step ms", "bytes/step", "trainable", "+peak MiB");
  for (std::size_t i = 0; i < results.size(); ++i) {
    const VariantResult& r = results[i];
    std::printf("%-20s %-22s %6zu %10.4f %8.2f %9.1f %12.0f %11lld %9.1f\n", r.name.c_str(),
                techniques_text(c.variants[i]).c_str(), r.steps.size(), train::final_held_out(r),
                100 * train::final_held_out_accuracy(r), 1e3 * train::mean_step_s(r), train::mean_bytes_per_step(r),
                static_cast<long long>(r.trainable), static_cast<double>(r.peak_memory_bytes) / (1 << 20));
  }
  const auto comparisons = train::compare_variants(c, results);
  if (!comparisons.empty()) {
    std::printf("# against the reference (held-out loss: variant − reference in nats, + = worse; accuracy drop in points)\n");
    std::printf("%-20s %-16s %13s %13s %10s %8s %8s\n", "variant", "reference", "Δloss steps", "Δloss time", "acc drop",
                "time ×", "bytes ×");
    for (const train::Comparison& x : comparisons) {
      char equal_time[32] = "-";
      if (x.held_out_delta_equal_time) std::snprintf(equal_time, sizeof equal_time, "%+.4f", *x.held_out_delta_equal_time);
      std::printf("%-20s %-16s %+13.4f %13s %+10.2f %8.3f %8.3f\n", x.variant.c_str(), x.reference.c_str(),
                  x.held_out_delta_equal_steps, equal_time, x.accuracy_drop_points, x.step_time_ratio, x.bytes_ratio);
    }
    std::vector<std::string> told;
    for (const train::Comparison& x : comparisons)
      if (x.seed_spread_loss && std::find(told.begin(), told.end(), x.reference) == told.end()) {
        told.push_back(x.reference);
        std::printf("# run-to-run spread of %s over %d runs with other seeds: %.4f nats, %.2f points (differences within "
                    "it are not told apart from it)\n",
                    x.reference.c_str(), x.seed_runs, *x.seed_spread_loss, *x.seed_spread_accuracy_points);
      }
  }
  if (!results.empty())
    std::printf("# byte-unigram entropy of the training text: %.4f nats (a model of byte frequencies alone)\n",
                results.front().unigram_entropy);
  std::printf("# wrote %s/{config.json, train.json, steps.csv, summary.csv, checkpoints/%s}\n", dir.string().c_str(),
              plotted ? ", train.png" : "");
}

// Returns whether train.png was drawn.
bool write_results(const TrainConfig& c, const std::vector<VariantResult>& results, bool plot) {
  const fs::path dir(c.output);
  const ResultsFolderLock lock(dir);
  const nlohmann::json resolved = train::train_config_to_json(c);
  RunProvenance p = make_provenance(resolved, git_revision(), twinbed_version());
  const nlohmann::json provenance = {{"config", p.config},   {"git_revision", p.git_revision}, {"twinbed_version", p.twinbed_version},
                                     {"date", p.date},       {"hostname", p.hostname},         {"ranks", c.ranks}};
  write_file_atomic(dir / "config.json", resolved.dump(2) + "\n");
  write_file_atomic(dir / "train.json", train::train_results_json(c, results, provenance).dump(2) + "\n");
  write_file_atomic(dir / "steps.csv", train::steps_csv(results));
  write_file_atomic(dir / "summary.csv", train::summary_csv(c, results));
  fs::create_directories(dir / "checkpoints");
  for (const VariantResult& r : results)
    if (!r.model.has_lora()) train::save_checkpoint(r.model, (dir / "checkpoints" / (r.name + ".bin")).string());
  if (!plot) return false;
  const std::string why = draw_plot("plot_train.py", dir / "train.json", dir / "train.png");
  if (!why.empty()) std::fprintf(stderr, "twinbed: note: no plot: %s\n", json_read::one_line(why).c_str());
  return why.empty();
}

void train_command(const TrainOptions& o, Invocation& invocation) {
  const TrainConfig c = configure(o);
  // Every error a config can hold (corpora, technique parameters, checkpoints), once, before any rank
  // starts; inside a job, again for its size.
  if (!real::in_mpi_job()) train::check_variants(c, c.ranks);
  if (c.ranks > 1 && !real::in_mpi_job()) {
    if (!real::mpi_built()) throw Unavailable("train on more than one rank needs MPI: install libopenmpi-dev openmpi-bin and rebuild");
    invocation.exit_code = real::relaunch_under_mpirun(c.ranks, invocation.argc, invocation.argv);
    return;
  }
  std::optional<real::MpiSession> mpi;
  if (real::in_mpi_job()) mpi.emplace();
  if (mpi && mpi->size() != c.ranks)
    std::fprintf(stderr, "twinbed: note: the MPI job has %d ranks, the config %d: training on %d\n", mpi->size(), c.ranks, mpi->size());
  const bool leader = !mpi || mpi->rank() == 0;
  try {
    if (mpi) train::check_variants(c, mpi->size());
    std::unique_ptr<train::Ranks> ranks = mpi ? train::mpi_ranks(c.collective_algorithm) : train::solo_ranks();
    std::vector<VariantResult> results;
    std::map<std::string, std::size_t> by_name;
    for (std::size_t i = 0; i < c.variants.size(); ++i) {
      const train::Variant& v = c.variants[i];
      std::optional<train::Gpt> loaded;
      const train::Gpt* start = nullptr;
      if (!v.from.empty()) start = &results.at(by_name.at(v.from)).model;
      if (!v.checkpoint.empty()) start = &loaded.emplace(train::load_checkpoint(v.checkpoint, c.model));
      if (leader)
        std::fprintf(stderr, "[%s] %s, %lld steps of %d sequences on %d ranks\n", v.name.c_str(), techniques_text(v).c_str(),
                     static_cast<long long>(v.training.steps), v.training.global_batch, ranks->size());
      const auto progress = [&](const train::StepRecord& s) {
        if (leader && s.held_out_loss)
          std::fprintf(stderr, "[%s] step %lld/%lld  loss %.4f  held-out %.4f (%.1f%% right)  %.1f ms/step\n",
                       v.name.c_str(), static_cast<long long>(s.step), static_cast<long long>(v.training.steps),
                       s.train_loss, *s.held_out_loss, 100 * s.held_out_accuracy.value_or(0),
                       1e3 * s.elapsed_s / static_cast<double>(s.step));
      };
      results.push_back(train::train_variant(c, i, *ranks, start, progress));
      by_name[v.name] = i;
    }
    if (!leader) return;
    const bool plotted = write_results(c, results, !o.no_plot);
    print_summary(c, results, c.output, plotted);
  } catch (const ConfigError&) {
    // Found alike on every rank before any exchange (check_variants): rank 0 says it, the others
    // leave quietly.
    if (leader) throw;
    invocation.exit_code = 1;
  } catch (const std::exception& e) {
    if (!mpi || mpi->size() == 1) throw;
    std::fprintf(stderr, "twinbed: error on rank %d: %s\n", mpi->rank(), json_read::one_line(e.what()).c_str());
    mpi->abort_job(1);
  }
}

}  // namespace

void add_train_command(CLI::App& app, Invocation& invocation) {
  auto opts = std::make_shared<TrainOptions>();
  CLI::App* cmd = app.add_subcommand(
      "train",
      "Train a small GPT for real on CPU ranks over MPI, the baseline and each technique variant of the config on the "
      "same data: held-out loss, bytes, step time and memory per variant, and their differences (README, \"Training for real\")");
  cmd->add_option("config", opts->config, "Training config (JSON); e.g. experiments/train-fortunes.json")->required();
  cmd->add_option("--out", opts->out, "Results folder (default: the config's \"output\", else results/<name>)");
  cmd->add_option("--ranks", opts->ranks, "Data-parallel ranks (overrides the config; relaunches under mpirun)")
      ->transform(in_range(1, 4096, true));
  cmd->add_option("--steps", opts->steps, "Steps of every variant (overrides the config; for a quick try)")
      ->transform(in_range(1, 100'000'000, true));
  cmd->add_option("--variant", opts->variants, "Train only these variants (repeatable; a variant's \"from\" variant must be named too)");
  cmd->add_flag("--no-plot", opts->no_plot, "Do not draw train.png");
  cmd->callback([opts, &invocation] { train_command(*opts, invocation); });
}

}  // namespace twinbed::cli
