#include "twinbed/claims/measured.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "twinbed/claims/claim.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/json_read.hpp"
#include "twinbed/train/corpus.hpp"
#include "twinbed/train/gpt.hpp"
#include "twinbed/train/train_config.hpp"

namespace twinbed::claims {

namespace {

using nlohmann::json;
using namespace json_read;

// A figure of train.json that may be null (a ratio over a zero, written by the JSON library as null).
double number_or_nan(const json& obj, const std::string& path, const char* key) {
  const json& v = required(obj, path, key);
  if (v.is_null()) return std::numeric_limits<double>::quiet_NaN();
  return read_number(v, child(path, key), "a number or null");
}

std::string corpus_words(const train::CorpusSpec& data) {
  std::string s = data.folder == train::kDefaultCorpus ? "Debian's fortunes" : "the texts of " + data.folder;
  if (!data.files.empty()) s += " (" + join(data.files) + ")";
  return s;
}

std::string percent(double fraction) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f %%", 100 * fraction);
  return buf;
}

std::string bytes_text(double b) {
  if (b >= 1e6) return format_value(b / 1e6) + " MB";
  if (b >= 1e3) return format_value(b / 1e3) + " kB";
  return format_value(b) + " B";
}

const TrainedVariant& variant_of(const TrainResults& r, const std::string& name) {
  const TrainedVariant* v = r.variant(name);
  if (!v) throw InvalidArgument("no variant '" + name + "' in the training results");
  return *v;
}

std::string accuracies(const TrainResults& r, const TrainedComparison& c) {
  return c.variant + " " + percent(variant_of(r, c.variant).final_held_out_accuracy) + " top-1 next-byte held-out accuracy, " +
         c.reference + " " + percent(variant_of(r, c.reference).final_held_out_accuracy);
}

}  // namespace

const TrainedVariant* TrainResults::variant(const std::string& name) const {
  auto it = std::find_if(variants.begin(), variants.end(), [&](const TrainedVariant& v) { return v.name == name; });
  return it == variants.end() ? nullptr : &*it;
}

const TrainedComparison* TrainResults::comparison(const std::string& name) const {
  auto it = std::find_if(comparisons.begin(), comparisons.end(), [&](const TrainedComparison& c) { return c.variant == name; });
  return it == comparisons.end() ? nullptr : &*it;
}

TrainResults train_results_from_json(const json& j, const std::string& where) {
  try {
    require_object(j, "");
    const std::string format = read_string(required(j, "", "format", "\"twinbed-train-1\""), "/format");
    if (format != "twinbed-train-1") fail("/format", "expected \"twinbed-train-1\", got " + json_read::quoted(format));
    const json& provenance = required(j, "", "provenance");
    require_object(provenance, "/provenance");
    train::TrainConfig config;
    try {
      config = train::train_config_from_json(required(provenance, "/provenance", "config", "the resolved training config"), "/");
    } catch (const ConfigError& e) {
      throw ConfigError("/provenance/config" + e.path(), e.message());
    }
    TrainResults r;
    r.layers = config.model.layers;
    r.hidden = config.model.hidden;
    r.ranks = config.ranks;
    const json& variants = required(j, "", "variants");
    if (!variants.is_array()) fail("/variants", "expected an array, got " + got(variants));
    for (std::size_t i = 0; i < variants.size(); ++i) {
      const std::string at = child("/variants", i);
      const json& v = variants[i];
      require_object(v, at);
      TrainedVariant t;
      t.name = read_name(required(v, at, "name"), at + "/name");
      auto spec = std::find_if(config.variants.begin(), config.variants.end(), [&](const train::Variant& c) { return c.name == t.name; });
      if (spec == config.variants.end()) fail(at + "/name", json_read::quoted(t.name) + " is not a variant of the config in /provenance/config");
      t.from = spec->from;
      t.checkpoint = !spec->checkpoint.empty();
      t.steps = spec->training.steps;
      t.corpus = corpus_words(spec->data);
      t.parameters = read_int(required(v, at, "parameters"), at + "/parameters", 1, std::numeric_limits<std::int64_t>::max());
      t.final_held_out_loss = number_or_nan(v, at, "final_held_out_loss");
      t.final_held_out_accuracy = number_or_nan(v, at, "final_held_out_accuracy");
      t.mean_bytes_per_step = number_or_nan(v, at, "mean_bytes_per_step");
      r.variants.push_back(std::move(t));
    }
    const json& comparisons = required(j, "", "comparisons");
    if (!comparisons.is_array()) fail("/comparisons", "expected an array, got " + got(comparisons));
    for (std::size_t i = 0; i < comparisons.size(); ++i) {
      const std::string at = child("/comparisons", i);
      const json& c = comparisons[i];
      require_object(c, at);
      TrainedComparison t;
      t.variant = read_name(required(c, at, "variant"), at + "/variant");
      t.reference = read_name(required(c, at, "reference"), at + "/reference");
      for (const std::string* name : {&t.variant, &t.reference})
        if (!r.variant(*name)) fail(at, json_read::quoted(*name) + " is not among /variants");
      t.held_out_delta_equal_steps = number_or_nan(c, at, "held_out_delta_equal_steps");
      t.accuracy_drop_points = number_or_nan(c, at, "accuracy_drop_points");
      t.bytes_ratio = number_or_nan(c, at, "bytes_ratio");
      // Absent in files written before the spread was recorded: unknown.
      t.seed_spread_loss = c.contains("seed_spread_loss") ? number_or_nan(c, at, "seed_spread_loss") : std::nan("");
      t.seed_spread_accuracy_points =
          c.contains("seed_spread_accuracy_points") ? number_or_nan(c, at, "seed_spread_accuracy_points") : std::nan("");
      t.seed_runs = c.contains("seed_runs") ? static_cast<int>(read_int(c["seed_runs"], child(at, "seed_runs"), 1, 1 << 20)) : 1;
      r.comparisons.push_back(std::move(t));
    }
    return r;
  } catch (const ConfigError& e) {
    throw Error(where + ": " + e.what());
  }
}

Registry<MeasuredMetric> measured_metrics() {
  Registry<MeasuredMetric> r("measured metric");
  r.add("accuracy_drop_points", "reference − variant top-1 held-out accuracy, percentage points",
        {"%",
         [](const TrainResults& t, const TrainedComparison& c, std::string& why) {
           why = accuracies(t, c);
           return c.accuracy_drop_points;
         },
         [](const TrainResults&, const TrainedComparison& c) { return c.seed_spread_accuracy_points; }});
  r.add("accuracy_retained_pct", "100 · variant / reference top-1 held-out accuracy",
        {"%",
         [](const TrainResults& t, const TrainedComparison& c, std::string& why) {
           why = accuracies(t, c);
           const double ref = variant_of(t, c.reference).final_held_out_accuracy;
           return ref > 0 ? 100 * variant_of(t, c.variant).final_held_out_accuracy / ref : std::nan("");
         },
         [](const TrainResults& t, const TrainedComparison& c) {
           // Points of accuracy over the reference's accuracy in percent: (points / 100) / ref · 100.
           const double ref = variant_of(t, c.reference).final_held_out_accuracy;
           return ref > 0 ? c.seed_spread_accuracy_points / ref : std::nan("");
         }});
  r.add("held_out_loss_increase_pct", "100 · (variant − reference held-out loss) / reference loss, after equal steps",
        {"%",
         [](const TrainResults& t, const TrainedComparison& c, std::string& why) {
           const TrainedVariant& ref = variant_of(t, c.reference);
           why = c.variant + " held-out loss " + format_value(variant_of(t, c.variant).final_held_out_loss) + " nats, " + c.reference +
                 " " + format_value(ref.final_held_out_loss) + " nats, both after " + std::to_string(ref.steps) + " steps";
           return ref.final_held_out_loss > 0 ? 100 * c.held_out_delta_equal_steps / ref.final_held_out_loss : std::nan("");
         },
         [](const TrainResults& t, const TrainedComparison& c) {
           const double ref = variant_of(t, c.reference).final_held_out_loss;
           return ref > 0 ? 100 * c.seed_spread_loss / ref : std::nan("");
         }});
  r.add("gradient_bytes_reduction_pct", "100 · (1 − variant / reference gradient bytes per step)",
        {"%",
         [](const TrainResults& t, const TrainedComparison& c, std::string& why) {
           why = c.variant + " sends " + bytes_text(variant_of(t, c.variant).mean_bytes_per_step) + " of gradients per step, " +
                 c.reference + " " + bytes_text(variant_of(t, c.reference).mean_bytes_per_step) + " (the busiest rank's exchange)";
           return 100 * (1 - c.bytes_ratio);
         },
         // The payload sizes are fixed by the variant's parameters: the same on every run.
         [](const TrainResults&, const TrainedComparison&) { return 0.0; }});
  return r;
}

std::string measured_scale(const TrainResults& r, const std::string& name) {
  const TrainedVariant& v = variant_of(r, name);
  const std::string how = v.from.empty() && !v.checkpoint ? "trained " : "fine-tuned ";
  const std::string start = !v.from.empty() ? " from " + v.from + "'s weights" : v.checkpoint ? " from a checkpoint" : "";
  return "a " + std::to_string(r.layers) + "-layer, " + std::to_string(r.hidden) + "-wide byte-level GPT (" +
         format_value(static_cast<double>(v.parameters) / 1e6) + " M parameters) " + how + std::to_string(v.steps) + " steps" + start +
         " on " + std::to_string(r.ranks) + " CPU rank" + (r.ranks == 1 ? "" : "s") + " on " + v.corpus;
}

int training_minutes(const std::string& train_config) {
  const train::TrainConfig c = train::load_train_config(train_config);
  const std::vector<train::Weight> weights = train::gpt_weights(c.model);
  const double params = static_cast<double>(weights.back().offset + weights.back().size());
  const double layers = c.model.layers, hidden = c.model.hidden, seq = c.model.seq_len;
  // Per sequence: a forward is 2·params·seq_len FLOPs plus 4·layers·seq_len²·hidden for attention's
  // full T×T products; a training step (forward and backward) three times that (gpt.hpp's cost).
  const double forward = 2 * params * seq + 4 * layers * seq * seq * hidden;
  double flops = 0;
  for (const train::Variant& v : c.variants) {
    const double steps = static_cast<double>(v.training.steps);
    const double evaluations = std::ceil(steps / static_cast<double>(v.training.eval_every));
    flops += steps * v.training.global_batch * 3 * forward;
    flops += evaluations * v.training.eval_batches * v.training.global_batch * forward;
  }
  // The rate experiments/train-fortunes.json (2.3e13 FLOPs by this count) trained at on 2 ranks of an
  // idle 2-core machine, techniques, exchanges and evaluations included: 4 min 25 s, 0.85e11 FLOP/s
  // (the 16-bit emulation of the precision variants is up to 1.2× slower than the baseline). About twice
  // as long when another job shares the cores.
  constexpr double kFlopsPerSecond = 0.85e11;
  return std::max(1, static_cast<int>(std::lround(flops / kFlopsPerSecond / 60)));
}

}  // namespace twinbed::claims
