#include "twinbed/claims/ledger.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <sstream>

#include "twinbed/claims/measured.hpp"
#include "twinbed/claims/metrics.hpp"
#include "twinbed/claims/runs.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/export.hpp"
#include "twinbed/core/json_read.hpp"
#include "twinbed/train/train_config.hpp"

namespace twinbed::claims {

namespace fs = std::filesystem;
using nlohmann::json;

std::vector<std::string> claim_files(const std::string& dir, const std::vector<std::string>& ids) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw ConfigError(dir, "no such folder of claim files (experiments/claims)");
  std::map<std::string, std::string> by_id;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() == ".json") by_id[entry.path().stem().string()] = entry.path().string();
  }
  if (ids.empty()) {
    std::vector<std::string> all;
    for (const auto& [id, file] : by_id) all.push_back(file);
    return all;
  }
  std::vector<std::string> out;
  for (const std::string& id : ids) {
    auto it = by_id.find(id);
    if (it == by_id.end()) {
      std::vector<std::string> known;
      for (const auto& [k, v] : by_id) known.push_back(k);
      throw ConfigError(id, "no claim with this ID in " + dir + "; known: " + json_read::join(known));
    }
    out.push_back(it->second);
  }
  return out;
}

namespace {

std::string with_unit(double v, const std::string& unit) { return format_value(v) + (unit.empty() ? "" : " " + unit); }

// A path as a person types it from the working folder: relative below it, else absolute.
std::string shown_path(const std::string& absolute) {
  std::error_code ec;
  const fs::path relative = fs::path(absolute).lexically_relative(fs::current_path(ec));
  if (ec || relative.empty() || *relative.begin() == "..") return absolute;
  return relative.string();
}

// The training configs and results the measured figures name: each config loaded, and its results
// looked up and read, once per ledger.
class Measurements {
 public:
  explicit Measurements(TrainResultsLookup lookup) : lookup_(std::move(lookup)) {}

  struct Config {
    std::vector<std::string> variants;
    std::optional<TrainResults> results;  // nullopt: none given
    std::string not_measured;             // the reason a figure gets without results
  };

  // The config the measured figure at `path` names, with its variant checked: ConfigErrors at
  // path/measured/train and path/measured/variant.
  const Config& config(const Measured& m, const std::string& path) {
    auto it = configs_.find(m.train_config);
    if (it == configs_.end()) it = configs_.emplace(m.train_config, load(m.train_config, path + "/measured/train")).first;
    const Config& c = it->second;
    if (std::find(c.variants.begin(), c.variants.end(), m.variant) == c.variants.end()) {
      throw ConfigError(path + "/measured/variant", json_read::quoted(m.variant) + " is not a variant of " + m.train +
                                                        "; it has " + json_read::join(c.variants));
    }
    return c;
  }

 private:
  Config load(const std::string& file, const std::string& at) const {
    Config c;
    int minutes = 0;
    try {
      for (const train::Variant& v : train::load_train_config(file).variants) c.variants.push_back(v.name);
      minutes = training_minutes(file);
    } catch (const Error& e) {
      throw ConfigError(at, "cannot load the training config " + file + ": " + json_read::one_line(e.what()));
    }
    if (lookup_) {
      if (std::optional<nlohmann::json> j = lookup_(file)) c.results = train_results_from_json(*j, "the training results of " + file);
    }
    c.not_measured = "not measured yet: run `twinbed train " + shown_path(file) + "` (about " + std::to_string(minutes) + " minute" +
                     (minutes == 1 ? "" : "s") + "), or `twinbed claims` without --no-train";
    return c;
  }

  TrainResultsLookup lookup_;
  std::map<std::string, Config> configs_;
};

// A figure's measured value, or why there is none.
struct MeasuredResult {
  std::optional<double> value;
  double spread = 0;          // run-to-run, in the value's unit; NaN when not measured
  int seed_runs = 1;          // the runs it was taken over
  std::string why;            // what it was computed from
  std::string scale;          // what it was measured on
  std::string not_measured;   // without results: the reason to give
};

MeasuredResult measure(const Figure& f, const std::string& path, Measurements& measurements) {
  const Measured& m = *f.measured;
  const Registry<MeasuredMetric> metrics = measured_metrics();
  const MeasuredMetric& metric = metrics.get(m.metric);  // known: checked when the claim was parsed
  if (metric.unit != f.reported.unit) {
    throw ConfigError(path + "/reported/unit", "is '" + f.reported.unit + "', but the measured metric '" + m.metric + "' gives '" + metric.unit + "'");
  }
  const Measurements::Config& config = measurements.config(m, path);
  MeasuredResult out;
  if (!config.results) {
    out.not_measured = config.not_measured;
    return out;
  }
  const TrainedComparison* comparison = config.results->comparison(m.variant);
  if (!comparison) {
    throw ConfigError(path + "/measured/variant", "figure '" + f.what + "': the results of " + m.train + " compare no reference with " +
                                                      json_read::quoted(m.variant) + " (only a variant with techniques is compared, with "
                                                      "a technique-free one trained as many steps from the same weights)");
  }
  out.value = metric.value(*config.results, *comparison, out.why);
  out.spread = metric.spread(*config.results, *comparison);
  out.seed_runs = comparison->seed_runs;
  out.scale = measured_scale(*config.results, m.variant);
  return out;
}

// One claim through its runs and metrics. Errors name the JSON path only; run_ledger adds the file.
ClaimResult run_claim(const std::string& file, Runs& runs, Measurements& measurements) {
  const auto t0 = std::chrono::steady_clock::now();
  ClaimResult result;
  result.claim = load_claim(file);
  const Claim& c = result.claim;
  for (std::size_t i = 0; i < c.figures.size(); ++i) {
    const Figure& f = c.figures[i];
    const std::string path = json_read::child("/figures", i);
    FigureResult r;
    r.what = f.what;
    r.reported = f.reported;
    r.note = f.note;
    std::string why;
    if (!f.metric.is_null()) {
      const MetricValue v = evaluate(f.metric, path + "/metric", c, runs);
      if (v.unit != f.reported.unit) {
        throw ConfigError(path + "/reported/unit", "is '" + f.reported.unit + "', but the metric '" + f.metric["name"].get<std::string>() +
                                                       "' gives '" + v.unit + "'");
      }
      r.simulated = v.value;
      why = v.why;
    }
    const MeasuredResult measured = f.measured ? measure(f, path, measurements) : MeasuredResult{};
    if (measured.value && std::isfinite(*measured.value)) r.measured = measured.value;
    r.measured_at = measured.scale;
    if (!f.arithmetic.is_null()) {
      const MetricValue v = evaluate(f.arithmetic, path + "/arithmetic", c, runs);
      r.arithmetic = v.value;
      r.arithmetic_unit = v.unit;
      r.arithmetic_why = v.why;
    }
    const auto add_arithmetic = [&] {
      if (r.judgement.verdict == Verdict::NotReproducibleHere && r.arithmetic) {
        r.judgement.reason += "; arithmetic check: " + with_unit(*r.arithmetic, r.arithmetic_unit) +
                              (r.arithmetic_why.empty() ? "" : " (" + r.arithmetic_why + ")");
      }
    };
    if (measured.value) {
      // Judged on what was measured, with what it came from, the note and, last, the scale it was
      // measured at; a simulated value stays beside it.
      r.judgement = judge(f, measured.value, "", Source::Measured);
      // A verdict that the run-to-run spread could turn is no verdict at this scale.
      const double spread = measured.spread;
      if (!std::isfinite(spread)) {
        r.judgement.reason += "; no run-to-run spread measured (the training config trains the reference with no other seed)";
      } else if (spread > 0) {
        // The verdict at either end of the spread and at the value itself (an interval wider than the
        // tolerance's can hold it with both ends outside).
        const Verdict low = judge(f, *measured.value - spread, "", Source::Measured).verdict;
        const Verdict high = judge(f, *measured.value + spread, "", Source::Measured).verdict;
        const std::string within = "the run-to-run spread of training at this scale is ±" + with_unit(spread, f.reported.unit) +
                                   " (max − min over " + std::to_string(measured.seed_runs) + " runs of the reference with different seeds)";
        if (low != high || low != r.judgement.verdict) {
          r.judgement.verdict = Verdict::NotReproducibleHere;
          r.judgement.reason += "; " + within + ", which reaches across the reported bound: this scale cannot tell";
        } else {
          r.judgement.reason += "; " + within + ", which does not change the verdict";
        }
      }
      if (!measured.why.empty()) r.judgement.reason += "; " + measured.why;
      if (!f.note.empty()) r.judgement.reason += "; " + f.note;
      if (r.simulated) r.judgement.reason += "; simulated " + with_unit(*r.simulated, f.reported.unit);
      add_arithmetic();
      r.judgement.reason += "; measured on " + measured.scale + ", not at the seed's scale";
    } else if (f.measured && f.metric.is_null()) {
      r.judgement = {Verdict::NotReproducibleHere, measured.not_measured};
      add_arithmetic();
      if (!f.note.empty()) r.judgement.reason += "; " + f.note;
    } else {
      std::string reason_why = why;
      if (!f.note.empty()) reason_why += (reason_why.empty() ? "" : ". ") + f.note;
      r.judgement = judge(f, r.simulated, reason_why);
      if (r.judgement.verdict == Verdict::Reproduced && !why.empty()) r.judgement.reason += "; " + why;
      if (f.measured) r.judgement.reason += "; " + measured.not_measured;
      add_arithmetic();
      if (r.judgement.verdict == Verdict::NotReproducibleHere && !f.not_reproducible.empty() && !f.note.empty()) {
        r.judgement.reason += "; " + f.note;
      }
    }
    result.figures.push_back(std::move(r));
  }
  // Derived inputs are part of the claim's assumptions, and a run that does not fit its devices'
  // memory is worth knowing: collect both from the runs.
  for (const auto& [name, spec] : c.runs.items()) {
    const RunResult& run = runs.get(c, name);
    if (!run.report.memory_fits) {
      char line[256];
      std::snprintf(line, sizeof line, "run '%s' does not fit its devices: peak %.1f GiB on rank %d, %.1f GiB per device",
                    name.c_str(), static_cast<double>(run.report.peak_memory) / static_cast<double>(GiB),
                    run.report.peak_memory_rank, static_cast<double>(run.report.inputs.device_memory) / static_cast<double>(GiB));
      result.derivations.push_back(line);
    }
    const auto& seen = result.derivations;
    if (!run.derivation.empty() && std::find(seen.begin(), seen.end(), run.derivation) == seen.end()) {
      result.derivations.push_back(run.derivation);
    }
  }
  result.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

}  // namespace

namespace {

// `f(file)`, its errors ending "(in <file>)": the one place an error learns which claim file it is about.
template <class F>
auto in_file(const std::string& file, F f) -> decltype(f()) {
  try {
    return f();
  } catch (const ConfigError& e) {
    throw ConfigError(e.path(), e.message() + " (in " + file + ")");
  } catch (const Error& e) {
    throw Error(std::string(e.what()) + " (in " + file + ")");
  }
}

}  // namespace

std::vector<std::string> train_configs(const std::vector<std::string>& files) {
  std::vector<std::string> out;
  Measurements measurements({});
  for (const std::string& file : files) {
    in_file(file, [&] {
      const Claim claim = load_claim(file);
      for (std::size_t i = 0; i < claim.figures.size(); ++i) {
        const Figure& f = claim.figures[i];
        if (!f.measured) continue;
        measure(f, json_read::child("/figures", i), measurements);  // the config loads, has the variant, the unit fits
        if (std::find(out.begin(), out.end(), f.measured->train_config) == out.end()) out.push_back(f.measured->train_config);
      }
    });
  }
  return out;
}

std::vector<ClaimResult> run_ledger(const std::vector<std::string>& files, const std::function<void(const std::string&)>& progress) {
  return run_ledger(files, LedgerOptions{progress, {}});
}

std::vector<ClaimResult> run_ledger(const std::vector<std::string>& files, const LedgerOptions& options) {
  const auto& progress = options.progress;
  Runs runs;
  Measurements measurements(options.train_results);
  std::vector<ClaimResult> out;
  for (const std::string& file : files) {
    out.push_back(in_file(file, [&] { return run_claim(file, runs, measurements); }));
    if (progress) {
      const ClaimResult& result = out.back();
      int reproduced = 0;
      for (const FigureResult& r : result.figures) reproduced += r.judgement.verdict == Verdict::Reproduced;
      char line[256];
      std::snprintf(line, sizeof line, "%-12s %zu figure(s), %d reproduced  (%.2f s)", result.claim.id.c_str(), result.figures.size(),
                    reproduced, result.wall_s);
      progress(line);
    }
  }
  return out;
}

namespace {

std::string simulated_text(const FigureResult& f) {
  if (!f.simulated) return f.arithmetic ? "(" + with_unit(*f.arithmetic, f.arithmetic_unit) + ")" : "—";
  return with_unit(*f.simulated, f.reported.unit);
}

std::string measured_text(const FigureResult& f) { return f.measured ? with_unit(*f.measured, f.reported.unit) : "—"; }

// Display width of UTF-8 text (code points).
std::size_t width(const std::string& s) {
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

std::string pad(const std::string& s, std::size_t w) { return s + std::string(w > width(s) ? w - width(s) : 0, ' '); }

std::string clip(const std::string& s, std::size_t w) {
  if (width(s) <= w) return s;
  std::string out;
  std::size_t n = 0;
  for (std::size_t i = 0; i < s.size() && n < w - 1; ++i) {
    out += s[i];
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if ((c & 0xC0) != 0x80) ++n;
    while (i + 1 < s.size() && (static_cast<unsigned char>(s[i + 1]) & 0xC0) == 0x80) out += s[++i];
  }
  return out + "…";
}

}  // namespace

std::string ledger_table(const std::vector<ClaimResult>& results) {
  std::ostringstream out;
  const std::size_t w_id = 12, w_what = 28, w_rep = 18, w_sim = 14, w_meas = 12, w_verdict = 22;
  out << pad("ID", w_id) << pad("figure", w_what) << pad("reported", w_rep) << pad("simulated", w_sim) << pad("measured", w_meas)
      << pad("verdict", w_verdict) << "reason\n";
  std::map<Verdict, int> counts;
  int measured = 0, unmeasured = 0;
  for (const ClaimResult& c : results) {
    for (std::size_t i = 0; i < c.figures.size(); ++i) {
      const FigureResult& f = c.figures[i];
      ++counts[f.judgement.verdict];
      measured += f.measured.has_value();
      unmeasured += f.measured_at.empty() && i < c.claim.figures.size() && c.claim.figures[i].measured;
      out << pad(c.claim.id, w_id) << pad(clip(f.what, w_what - 1), w_what) << pad(clip(format_reported(f.reported), w_rep - 1), w_rep)
          << pad(clip(simulated_text(f), w_sim - 1), w_sim) << pad(clip(measured_text(f), w_meas - 1), w_meas)
          << pad(to_string(f.judgement.verdict), w_verdict) << clip(f.judgement.reason, 110) << "\n";
    }
  }
  out << "# " << results.size() << " claims: " << counts[Verdict::Reproduced] << " figures reproduced, "
      << counts[Verdict::NotReproduced] << " not reproduced, " << counts[Verdict::NotReproducibleHere]
      << " not reproducible here; " << measured << " measured in training runs"
      << (unmeasured ? ", " + std::to_string(unmeasured) + " not measured yet" : std::string());
  return out.str();
}

namespace {

// Where figure i of the claim is measured: {"train": absolute config, "variant", "metric"}, or null.
json measured_from(const Claim& claim, std::size_t i) {
  if (i >= claim.figures.size() || !claim.figures[i].measured) return json();
  const Measured& m = *claim.figures[i].measured;
  return {{"train", m.train_config}, {"variant", m.variant}, {"metric", m.metric}};
}

}  // namespace

json ledger_json(const std::vector<ClaimResult>& results) {
  json claims = json::array();
  for (const ClaimResult& c : results) {
    json figures = json::array();
    for (std::size_t i = 0; i < c.figures.size(); ++i) {
      const FigureResult& f = c.figures[i];
      json reported = {{"text", format_reported(f.reported)}, {"unit", f.reported.unit}};
      if (f.reported.value) reported["value"] = *f.reported.value;
      if (f.reported.min) reported["min"] = *f.reported.min;
      if (f.reported.max) reported["max"] = *f.reported.max;
      if (f.reported.baseline) reported["baseline"] = *f.reported.baseline;
      figures.push_back({{"what", f.what},
                         {"reported", reported},
                         {"simulated", f.simulated ? json(*f.simulated) : json()},
                         {"measured", f.measured ? json(*f.measured) : json()},
                         {"measured_from", measured_from(c.claim, i)},
                         {"measured_at", f.measured_at},
                         {"arithmetic", f.arithmetic ? json(*f.arithmetic) : json()},
                         {"arithmetic_unit", f.arithmetic_unit},
                         {"verdict", to_string(f.judgement.verdict)},
                         {"reason", f.judgement.reason},
                         {"note", f.note}});
    }
    claims.push_back({{"id", c.claim.id},
                      {"seed", c.claim.seed},
                      {"technique", c.claim.technique},
                      {"claim", c.claim.claim},
                      {"assumptions", c.claim.assumptions},
                      {"derivations", c.derivations},
                      {"file", c.claim.file},
                      {"wall_s", c.wall_s},
                      {"figures", figures}});
  }
  return {{"claims", claims}};
}

std::string ledger_csv(const std::vector<ClaimResult>& results) {
  std::ostringstream out;
  out << "id,technique,figure,reported,unit,simulated,measured,verdict,reason\n";
  for (const ClaimResult& c : results) {
    for (const FigureResult& f : c.figures) {
      out << csv_field(c.claim.id) << "," << csv_field(c.claim.technique) << "," << csv_field(f.what) << ","
          << csv_field(format_reported(f.reported)) << "," << csv_field(f.reported.unit) << ","
          << (f.simulated ? format_value(*f.simulated) : "") << "," << (f.measured ? format_value(*f.measured) : "") << ","
          << to_string(f.judgement.verdict) << "," << csv_field(f.judgement.reason) << "\n";
    }
  }
  return out.str();
}

std::string ledger_markdown(const std::vector<ClaimResult>& results) {
  std::ostringstream out;
  out << "# Claims ledger\n\n"
      << "Every figure of `../shared/CLAIMS.md` put through its experiments (`experiments/claims/<ID>.json`): reported, "
         "simulated, measured (the accuracy figures, in real training runs of a small GPT by `twinbed train`, at the scale "
         "each reason states) and a computed verdict with its reason.\n\n"
      << "| ID | figure | reported | simulated | measured | verdict |\n|---|---|---|---|---|---|\n";
  for (const ClaimResult& c : results) {
    for (const FigureResult& f : c.figures) {
      out << "| " << c.claim.id << " | " << f.what << " | " << format_reported(f.reported) << " | " << simulated_text(f) << " | "
          << measured_text(f) << " | " << to_string(f.judgement.verdict) << " |\n";
    }
  }
  for (const ClaimResult& c : results) {
    out << "\n## " << c.claim.id << " — " << c.claim.technique << " (seed " << c.claim.seed << ")\n\n"
        << "Claimed: " << c.claim.claim << "\n";
    if (!c.claim.assumptions.empty() || !c.derivations.empty()) {
      out << "\nAssumptions:\n";
      for (const std::string& a : c.claim.assumptions) out << "- " << a << "\n";
      for (const std::string& a : c.derivations) out << "- " << a << "\n";
    }
    out << "\n";
    for (const FigureResult& f : c.figures) {
      out << "- **" << f.what << "** — " << to_string(f.judgement.verdict) << ": " << f.judgement.reason << "\n";
    }
  }
  return out.str();
}

}  // namespace twinbed::claims
