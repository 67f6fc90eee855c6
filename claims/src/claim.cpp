#include "twinbed/claims/claim.hpp"

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "twinbed/claims/measured.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/json_read.hpp"

namespace twinbed::claims {

namespace {

using nlohmann::json;
using namespace json_read;

Reported parse_reported(const json& j, const std::string& path) {
  require_object(j, path);
  check_keys(j, path, {"value", "min", "max", "unit", "baseline"});
  Reported r;
  auto number = [&](const char* key) -> std::optional<double> {
    if (!j.contains(key)) return std::nullopt;
    return read_number(j[key], child(path, key), "a number");
  };
  r.value = number("value");
  r.min = number("min");
  r.max = number("max");
  r.baseline = number("baseline");
  if (j.contains("unit")) r.unit = read_string(j["unit"], path + "/unit");
  if (r.value && (r.min || r.max)) fail(path, "give either \"value\" or a range (\"min\" and/or \"max\"), not both");
  if (!r.value && !r.min && !r.max) fail(path, "expected \"value\", or \"min\" and/or \"max\"");
  if (r.min && r.max && *r.min > *r.max) fail(path + "/min", "is above \"max\"");
  return r;
}

// The training config is resolved against the claim file's folder; whether it loads and has the variant
// is checked by the ledger, which loads it.
Measured parse_measured(const json& j, const std::string& path, const std::string& file) {
  require_object(j, path);
  check_keys(j, path, {"train", "variant", "metric"});
  Measured m;
  m.train = read_name(required(j, path, "train", "a training config, relative to the claim file"), path + "/train");
  m.variant = read_name(required(j, path, "variant", "a variant of that training config"), path + "/variant");
  m.metric = read_name(required(j, path, "metric", "a measured metric"), path + "/metric");
  const Registry<MeasuredMetric> known = measured_metrics();
  if (!known.find(m.metric)) fail(path + "/metric", "unknown measured metric '" + m.metric + "'; known: " + join(known.names()));
  m.train_config = std::filesystem::absolute(std::filesystem::path(file).parent_path() / m.train).lexically_normal().string();
  return m;
}

Figure parse_figure(const json& j, const std::string& path, const std::string& file) {
  require_object(j, path);
  check_keys(j, path, {"what", "reported", "metric", "measured", "not_reproducible", "arithmetic", "tolerance", "note"});
  Figure f;
  f.what = read_name(required(j, path, "what", "what the figure measures"), path + "/what");
  f.reported = parse_reported(required(j, path, "reported", "the figure as the seed reports it"), path + "/reported");
  const bool judged = j.contains("metric") || j.contains("measured");
  if (judged == j.contains("not_reproducible")) {
    fail(path, "give \"metric\" (how the figure is simulated) and/or \"measured\" (where it is measured), or else "
               "\"not_reproducible\" (why it cannot be)");
  }
  if (j.contains("metric")) {
    f.metric = j["metric"];
    require_object(f.metric, path + "/metric");
    read_name(required(f.metric, path + "/metric", "name", "the metric's name"), path + "/metric/name");
  }
  if (j.contains("measured")) f.measured = parse_measured(j["measured"], path + "/measured", file);
  if (j.contains("not_reproducible")) f.not_reproducible = read_name(j["not_reproducible"], path + "/not_reproducible");
  if (j.contains("arithmetic")) {
    if (j.contains("metric")) fail(path + "/arithmetic", "belongs to a figure without \"metric\" (the simulated value is the figure's own)");
    f.arithmetic = j["arithmetic"];
    require_object(f.arithmetic, path + "/arithmetic");
    read_name(required(f.arithmetic, path + "/arithmetic", "name", "the metric's name"), path + "/arithmetic/name");
  }
  if (j.contains("tolerance")) {
    const json& t = j["tolerance"];
    const std::string at = path + "/tolerance";
    require_object(t, at);
    check_keys(t, at, {"rel", "abs"});
    if (t.contains("rel") == t.contains("abs")) fail(at, "give one of \"rel\" (a fraction of the reported value) and \"abs\"");
    if (t.contains("rel")) f.tolerance.rel = read_number(t["rel"], at + "/rel", "a fraction >= 0");
    if (t.contains("abs")) f.tolerance.abs = read_number(t["abs"], at + "/abs", "a number >= 0");
    if (f.tolerance.rel < 0 || f.tolerance.abs.value_or(0) < 0) fail(at, "must not be negative");
  }
  if (j.contains("note")) f.note = read_string(j["note"], path + "/note");
  return f;
}

double tol(const Tolerance& t, double x) { return t.abs ? *t.abs : t.rel * std::abs(x); }

}  // namespace

Claim claim_from_json(const json& j, const std::string& file) {
  require_object(j, "");
  check_keys(j, "", {"id", "seed", "technique", "claim", "assumptions", "runs", "figures"});
  Claim c;
  c.file = file;
  c.id = read_name(required(j, "", "id", "the claim's ID in CLAIMS.md"), "/id");
  c.seed = read_string(required(j, "", "seed", "the seed article"), "/seed");
  c.technique = read_name(required(j, "", "technique"), "/technique");
  c.claim = read_name(required(j, "", "claim", "the figures as CLAIMS.md states them"), "/claim");
  if (j.contains("assumptions")) {
    const json& a = j["assumptions"];
    if (!a.is_array()) fail("/assumptions", "expected an array of sentences, got " + got(a));
    for (std::size_t i = 0; i < a.size(); ++i) c.assumptions.push_back(read_name(a[i], child("/assumptions", i)));
  }
  if (j.contains("runs")) {
    require_object(j["runs"], "/runs");
    c.runs = j["runs"];
  }
  const json& figures = required(j, "", "figures", "the reported figures");
  if (!figures.is_array() || figures.empty()) fail("/figures", "expected a non-empty array of figures, got " + got(figures));
  for (std::size_t i = 0; i < figures.size(); ++i) c.figures.push_back(parse_figure(figures[i], child("/figures", i), file));
  return c;
}

Claim load_claim(const std::string& file) {
  const Claim c = claim_from_json(read_json_file(file, "claim"), std::filesystem::absolute(file).string());
  const std::string stem = std::filesystem::path(file).stem().string();
  if (c.id != stem) throw ConfigError("/id", "'" + c.id + "' differs from the file name '" + stem + "'");
  return c;
}

std::string to_string(Verdict v) {
  switch (v) {
    case Verdict::Reproduced: return "reproduced";
    case Verdict::NotReproduced: return "not reproduced";
    case Verdict::NotReproducibleHere: return "not reproducible here";
  }
  return "not reproducible here";
}

std::string format_value(double v) {
  char buf[64];
  const double a = std::abs(v);
  if (a != 0 && (a >= 1e5 || a < 1e-3)) std::snprintf(buf, sizeof buf, "%.3g", v);
  else if (a >= 100) std::snprintf(buf, sizeof buf, "%.0f", v);
  else std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

std::string format_reported(const Reported& r) {
  std::string s;
  if (r.value) s = format_value(*r.value);
  else if (r.min && r.max) s = format_value(*r.min) + "–" + format_value(*r.max);
  else if (r.max) s = "≤ " + format_value(*r.max);
  else s = "≥ " + format_value(*r.min);
  if (r.baseline) s = format_value(*r.baseline) + " → " + s;
  if (!r.unit.empty()) s += " " + r.unit;
  return s;
}

Judgement judge(const Figure& f, std::optional<double> value, const std::string& why, Source source) {
  const bool simulated = source == Source::Simulated;
  Judgement j;
  if (!f.not_reproducible.empty()) {
    j.verdict = Verdict::NotReproducibleHere;
    j.reason = f.not_reproducible;
    return j;
  }
  if (!value || !std::isfinite(*value)) {
    j.verdict = Verdict::NotReproducibleHere;
    j.reason = std::string(simulated ? "the simulation" : "the training run") + " gave no figure" +
               (why.empty() ? std::string() : ": " + why);
    return j;
  }
  const Reported& r = f.reported;
  const double s = *value;
  bool inside = true;
  double anchor = 0;  // the reported number the ratio is taken against
  if (r.value) {
    inside = std::abs(s - *r.value) <= tol(f.tolerance, *r.value);
    anchor = *r.value;
  } else {
    if (r.min) inside = inside && s >= *r.min - tol(f.tolerance, *r.min);
    if (r.max) inside = inside && s <= *r.max + tol(f.tolerance, *r.max);
    anchor = r.min && r.max ? (s < *r.min ? *r.min : *r.max) : r.min ? *r.min : *r.max;
  }
  const std::string unit = r.unit.empty() ? "" : " " + r.unit;
  j.reason = (simulated ? "simulated " : "measured ") + format_value(s) + unit + ", reported " + format_reported(r);
  if (anchor != 0 && s != 0 && (anchor > 0) == (s > 0)) {
    const double ratio = s / anchor;
    j.reason += " (" + format_value(ratio >= 1 ? ratio : 1 / ratio) + "× " + (ratio >= 1 ? "above" : "below") + ")";
  } else if (s != anchor) {
    j.reason += " (" + format_value(std::abs(s - anchor)) + unit + " " + (s > anchor ? "above" : "below") + ")";
  }
  j.verdict = inside ? Verdict::Reproduced : Verdict::NotReproduced;
  if (inside) {
    j.reason += ", within the tolerance (" + (f.tolerance.abs ? "±" + format_value(*f.tolerance.abs) + unit
                                                              : "±" + format_value(100 * f.tolerance.rel) + "%") + ")";
  } else if (!why.empty()) {
    j.reason += "; " + why;
  }
  return j;
}

}  // namespace twinbed::claims
