#include "twinbed/claims/ledger.hpp"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <sstream>

#include "twinbed/claims/metrics.hpp"
#include "twinbed/claims/runs.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/export.hpp"
#include "twinbed/core/json_read.hpp"

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

// One claim through its runs and metrics. Errors name the JSON path only; run_ledger adds the file.
ClaimResult run_claim(const std::string& file, Runs& runs) {
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
    if (!f.arithmetic.is_null()) {
      const MetricValue v = evaluate(f.arithmetic, path + "/arithmetic", c, runs);
      r.arithmetic = v.value;
      r.arithmetic_unit = v.unit;
      r.arithmetic_why = v.why;
    }
    std::string reason_why = why;
    if (!f.note.empty()) reason_why += (reason_why.empty() ? "" : ". ") + f.note;
    r.judgement = judge(f, r.simulated, reason_why);
    if (r.judgement.verdict == Verdict::NotReproducibleHere && r.arithmetic) {
      r.judgement.reason += "; arithmetic check: " + with_unit(*r.arithmetic, r.arithmetic_unit) +
                            (r.arithmetic_why.empty() ? "" : " (" + r.arithmetic_why + ")");
    }
    if (r.judgement.verdict == Verdict::NotReproducibleHere && !f.not_reproducible.empty() && !f.note.empty()) {
      r.judgement.reason += "; " + f.note;
    }
    if (r.judgement.verdict == Verdict::Reproduced && !why.empty()) r.judgement.reason += "; " + why;
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

std::vector<ClaimResult> run_ledger(const std::vector<std::string>& files, const std::function<void(const std::string&)>& progress) {
  Runs runs;
  std::vector<ClaimResult> out;
  for (const std::string& file : files) {
    // The one place an error learns which claim file it is about.
    try {
      out.push_back(run_claim(file, runs));
    } catch (const ConfigError& e) {
      throw ConfigError(e.path(), e.message() + " (in " + file + ")");
    } catch (const Error& e) {
      throw Error(std::string(e.what()) + " (in " + file + ")");
    }
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

std::string measured_text(const FigureResult& f) { return f.measured ? format_value(*f.measured) : "—"; }

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
  const std::size_t w_id = 12, w_what = 28, w_rep = 18, w_sim = 14, w_meas = 9, w_verdict = 22;
  out << pad("ID", w_id) << pad("figure", w_what) << pad("reported", w_rep) << pad("simulated", w_sim) << pad("measured", w_meas)
      << pad("verdict", w_verdict) << "reason\n";
  std::map<Verdict, int> counts;
  for (const ClaimResult& c : results) {
    for (const FigureResult& f : c.figures) {
      ++counts[f.judgement.verdict];
      out << pad(c.claim.id, w_id) << pad(clip(f.what, w_what - 1), w_what) << pad(clip(format_reported(f.reported), w_rep - 1), w_rep)
          << pad(clip(simulated_text(f), w_sim - 1), w_sim) << pad(measured_text(f), w_meas)
          << pad(to_string(f.judgement.verdict), w_verdict) << clip(f.judgement.reason, 110) << "\n";
    }
  }
  out << "# " << results.size() << " claims: " << counts[Verdict::Reproduced] << " figures reproduced, "
      << counts[Verdict::NotReproduced] << " not reproduced, " << counts[Verdict::NotReproducibleHere]
      << " not reproducible here (measured: no real backend run yet)";
  return out.str();
}

json ledger_json(const std::vector<ClaimResult>& results) {
  json claims = json::array();
  for (const ClaimResult& c : results) {
    json figures = json::array();
    for (const FigureResult& f : c.figures) {
      json reported = {{"text", format_reported(f.reported)}, {"unit", f.reported.unit}};
      if (f.reported.value) reported["value"] = *f.reported.value;
      if (f.reported.min) reported["min"] = *f.reported.min;
      if (f.reported.max) reported["max"] = *f.reported.max;
      if (f.reported.baseline) reported["baseline"] = *f.reported.baseline;
      figures.push_back({{"what", f.what},
                         {"reported", reported},
                         {"simulated", f.simulated ? json(*f.simulated) : json()},
                         {"measured", f.measured ? json(*f.measured) : json()},
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
         "simulated, measured (empty until a real backend runs them) and a computed verdict with its reason.\n\n"
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
