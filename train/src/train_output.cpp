#include "twinbed/train/train_output.hpp"

#include <cmath>
#include <sstream>

#include "twinbed/core/export.hpp"

namespace twinbed::train {
using nlohmann::json;

namespace {

bool same_start(const Variant& a, const Variant& b) { return a.from == b.from && a.checkpoint == b.checkpoint; }

std::string number(double v) {
  std::ostringstream out;
  out.precision(9);
  out << v;
  return out.str();
}

json techniques_json(const Variant& v) {
  json out = json::array();
  for (const TechniqueConfig& t : v.techniques) {
    json entry = t.params;
    entry["pass"] = t.pass;
    out.push_back(entry);
  }
  return out;
}

json step_json(const StepRecord& s) {
  json j = {{"step", s.step},         {"lr", s.lr},
            {"train_loss", s.train_loss}, {"held_out_loss", s.held_out_loss ? json(*s.held_out_loss) : json(nullptr)},
            {"held_out_accuracy", s.held_out_accuracy ? json(*s.held_out_accuracy) : json(nullptr)},
            {"step_s", s.step_s},     {"elapsed_s", s.elapsed_s},
            {"bytes_sent", s.bytes_sent}, {"peak_memory_bytes", s.peak_memory_bytes}, {"skipped", s.skipped},
            {"loss_scale", s.loss_scale}, {"tgc_bits", s.tgc_bits},
            {"active_fraction", s.active_fraction}, {"low_precision_layers", s.low_precision_layers}};
  return j;
}

}  // namespace

double final_held_out(const VariantResult& r) {
  for (auto it = r.steps.rbegin(); it != r.steps.rend(); ++it)
    if (it->held_out_loss) return *it->held_out_loss;
  return std::nan("");
}

double final_held_out_accuracy(const VariantResult& r) {
  for (auto it = r.steps.rbegin(); it != r.steps.rend(); ++it)
    if (it->held_out_accuracy) return *it->held_out_accuracy;
  return std::nan("");
}

double mean_step_s(const VariantResult& r) {
  return r.steps.empty() ? 0 : r.steps.back().elapsed_s / static_cast<double>(r.steps.size());
}

double mean_bytes_per_step(const VariantResult& r) {
  double total = 0;
  for (const StepRecord& s : r.steps) total += static_cast<double>(s.bytes_sent);
  return r.steps.empty() ? 0 : total / static_cast<double>(r.steps.size());
}

std::optional<double> held_out_at_time(const VariantResult& r, double elapsed_s) {
  const StepRecord* before = nullptr;
  for (const StepRecord& s : r.steps) {
    if (!s.held_out_loss) continue;
    if (s.elapsed_s == elapsed_s) return *s.held_out_loss;
    if (s.elapsed_s > elapsed_s) {
      if (!before) return std::nullopt;
      const double f = (elapsed_s - before->elapsed_s) / (s.elapsed_s - before->elapsed_s);
      return *before->held_out_loss + f * (*s.held_out_loss - *before->held_out_loss);
    }
    before = &s;
  }
  return std::nullopt;
}

std::vector<Comparison> compare_variants(const TrainConfig& config, const std::vector<VariantResult>& results) {
  std::vector<Comparison> out;
  for (std::size_t i = 0; i < results.size() && i < config.variants.size(); ++i) {
    const Variant& v = config.variants[i];
    if (v.techniques.empty()) continue;
    for (std::size_t j = 0; j < results.size() && j < config.variants.size(); ++j) {
      const Variant& ref = config.variants[j];
      if (!ref.techniques.empty() || !same_start(v, ref) || ref.training.steps != v.training.steps) continue;
      const VariantResult& a = results[i];
      const VariantResult& b = results[j];
      Comparison c;
      c.variant = v.name;
      c.reference = ref.name;
      c.held_out_delta_equal_steps = final_held_out(a) - final_held_out(b);
      c.accuracy_drop_points = 100 * (final_held_out_accuracy(b) - final_held_out_accuracy(a));
      const double t = std::min(a.steps.back().elapsed_s, b.steps.back().elapsed_s);
      const auto la = held_out_at_time(a, t), lb = held_out_at_time(b, t);
      if (la && lb) c.held_out_delta_equal_time = *la - *lb;
      const auto ratio = [](double x, double y) { return y > 0 ? x / y : std::nan(""); };
      c.step_time_ratio = ratio(mean_step_s(a), mean_step_s(b));
      c.bytes_ratio = ratio(mean_bytes_per_step(a), mean_bytes_per_step(b));
      c.trainable_ratio = ratio(static_cast<double>(a.trainable), static_cast<double>(b.trainable));
      c.peak_memory_ratio = ratio(static_cast<double>(a.peak_memory_bytes), static_cast<double>(b.peak_memory_bytes));
      // The spread of the reference's technique-free peers.
      double lo_loss = final_held_out(b), hi_loss = lo_loss;
      double lo_acc = final_held_out_accuracy(b), hi_acc = lo_acc;
      int peers = 0;
      for (std::size_t q = j + 1; q < results.size() && q < config.variants.size(); ++q) {
        const Variant& peer = config.variants[q];
        if (!peer.techniques.empty() || !same_start(v, peer) || peer.training.steps != v.training.steps) continue;
        ++peers;
        lo_loss = std::min(lo_loss, final_held_out(results[q]));
        hi_loss = std::max(hi_loss, final_held_out(results[q]));
        lo_acc = std::min(lo_acc, final_held_out_accuracy(results[q]));
        hi_acc = std::max(hi_acc, final_held_out_accuracy(results[q]));
      }
      c.seed_runs = 1 + peers;
      if (peers > 0) {
        c.seed_spread_loss = hi_loss - lo_loss;
        c.seed_spread_accuracy_points = 100 * (hi_acc - lo_acc);
      }
      out.push_back(c);
      break;
    }
  }
  return out;
}

json train_results_json(const TrainConfig& config, const std::vector<VariantResult>& results, const json& provenance) {
  json variants = json::array();
  for (std::size_t i = 0; i < results.size(); ++i) {
    const VariantResult& r = results[i];
    json steps = json::array();
    for (const StepRecord& s : r.steps) steps.push_back(step_json(s));
    variants.push_back({{"name", r.name},
                        {"techniques", techniques_json(config.variants.at(i))},
                        {"parameters", r.parameters},
                        {"trainable", r.trainable},
                        {"peak_memory_bytes", r.peak_memory_bytes},
                        {"overflow_steps", r.overflow_steps},
                        {"unigram_entropy_nats", r.unigram_entropy},
                        {"train_bytes", r.train_bytes},
                        {"held_out_bytes", r.held_out_bytes},
                        {"final_held_out_loss", final_held_out(r)},
                        {"final_held_out_accuracy", final_held_out_accuracy(r)},
                        {"mean_step_s", mean_step_s(r)},
                        {"mean_bytes_per_step", mean_bytes_per_step(r)},
                        {"steps", steps}});
  }
  json comparisons = json::array();
  for (const Comparison& c : compare_variants(config, results)) {
    comparisons.push_back({{"variant", c.variant},
                           {"reference", c.reference},
                           {"held_out_delta_equal_steps", c.held_out_delta_equal_steps},
                           {"held_out_delta_equal_time",
                            c.held_out_delta_equal_time ? json(*c.held_out_delta_equal_time) : json(nullptr)},
                           {"accuracy_drop_points", c.accuracy_drop_points},
                           {"seed_spread_loss", c.seed_spread_loss ? json(*c.seed_spread_loss) : json(nullptr)},
                           {"seed_spread_accuracy_points",
                            c.seed_spread_accuracy_points ? json(*c.seed_spread_accuracy_points) : json(nullptr)},
                           {"seed_runs", c.seed_runs},
                           {"step_time_ratio", c.step_time_ratio},
                           {"bytes_ratio", c.bytes_ratio},
                           {"trainable_ratio", c.trainable_ratio},
                           {"peak_memory_ratio", c.peak_memory_ratio}});
  }
  return {{"format", "twinbed-train-1"}, {"provenance", provenance}, {"variants", variants}, {"comparisons", comparisons}};
}

std::string steps_csv(const std::vector<VariantResult>& results) {
  std::ostringstream out;
  out << "variant,step,lr,train_loss,held_out_loss,held_out_accuracy,step_s,elapsed_s,bytes_sent,peak_memory_bytes,skipped,"
         "loss_scale,tgc_bits,active_fraction,low_precision_layers\n";
  for (const VariantResult& r : results)
    for (const StepRecord& s : r.steps)
      out << csv_field(r.name) << ',' << s.step << ',' << number(s.lr) << ',' << number(s.train_loss) << ','
          << (s.held_out_loss ? number(*s.held_out_loss) : "") << ','
          << (s.held_out_accuracy ? number(*s.held_out_accuracy) : "") << ',' << number(s.step_s) << ',' << number(s.elapsed_s)
          << ',' << s.bytes_sent << ',' << s.peak_memory_bytes << ',' << (s.skipped ? 1 : 0) << ',' << number(s.loss_scale) << ',' << s.tgc_bits << ','
          << number(s.active_fraction) << ',' << s.low_precision_layers << '\n';
  return out.str();
}

std::string summary_csv(const TrainConfig& config, const std::vector<VariantResult>& results) {
  const std::vector<Comparison> comparisons = compare_variants(config, results);
  std::ostringstream out;
  out << "variant,steps,final_held_out_loss,final_held_out_accuracy,mean_step_s,mean_bytes_per_step,trainable,"
         "peak_memory_bytes,overflow_steps,reference,held_out_delta_equal_steps,held_out_delta_equal_time,"
         "accuracy_drop_points,step_time_ratio,bytes_ratio\n";
  for (const VariantResult& r : results) {
    out << csv_field(r.name) << ',' << r.steps.size() << ',' << number(final_held_out(r)) << ','
        << number(final_held_out_accuracy(r)) << ',' << number(mean_step_s(r))
        << ',' << number(mean_bytes_per_step(r)) << ',' << r.trainable << ',' << r.peak_memory_bytes << ','
        << r.overflow_steps << ',';
    const Comparison* c = nullptr;
    for (const Comparison& x : comparisons)
      if (x.variant == r.name) c = &x;
    if (c)
      out << csv_field(c->reference) << ',' << number(c->held_out_delta_equal_steps) << ','
          << (c->held_out_delta_equal_time ? number(*c->held_out_delta_equal_time) : "") << ','
          << number(c->accuracy_drop_points) << ',' << number(c->step_time_ratio) << ',' << number(c->bytes_ratio);
    else
      out << ",,,,,";
    out << '\n';
  }
  return out.str();
}

}  // namespace twinbed::train
