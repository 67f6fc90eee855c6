#include "twinbed/claims/metrics.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "twinbed/core/error.hpp"
#include "twinbed/core/json_read.hpp"
#include "twinbed/core/passes/lora.hpp"
#include "twinbed/core/passes/tgc.hpp"
#include "twinbed/core/passes/zrdf.hpp"
#include "twinbed/core/profile.hpp"
#include "twinbed/core/schedule.hpp"
#include "twinbed/kernels/payload.hpp"
#include "twinbed/sim/compute_model.hpp"

namespace twinbed::claims {

namespace {

using nlohmann::json;
using namespace json_read;

double d(std::int64_t v) { return static_cast<double>(v); }

// ---- what a run holds ----

int group_size(const Plan& plan, GroupKind g) {
  const GroupSet& set = plan.group_set(g);
  return set.members.empty() ? 1 : static_cast<int>(set.members.front().size());
}

}  // namespace

double collective_bus_bytes(const Plan& plan, bool grads_only) {
  std::vector<double> per_program(plan.programs.size(), 0);
  for (std::size_t p = 0; p < plan.programs.size(); ++p) {
    for (const PlanOp& op : plan.programs[p].ops) {
      if (op.kind != OpKind::Collective || (grads_only && op.tensor_class != TensorClass::Grads)) continue;
      per_program[p] += busbw_factor(op.collective, group_size(plan, op.group)) * d(op.bytes);
    }
  }
  double sum = 0;
  for (int p : plan.program_of_rank) sum += per_program[static_cast<std::size_t>(p)];
  return sum / static_cast<double>(plan.program_of_rank.size());
}

namespace {

double total_memory(const Report& r) {
  double sum = 0;
  for (const RankSummary& s : r.ranks) sum += d(s.peak_memory);
  return sum;
}

// The model state a rank of `program` allocates (weights, gradients, optimizer state).
Bytes model_state(const Program& program) {
  Bytes b = 0;
  for (const PlanOp& op : program.ops) {
    const bool state = op.tensor_class == TensorClass::Weights || op.tensor_class == TensorClass::Grads ||
                       op.tensor_class == TensorClass::Optimizer;
    if (op.kind == OpKind::Alloc && state) b += op.bytes;
  }
  return b;
}

double activation_peak(const RunResult& r) {
  const int rank = r.report.peak_memory_rank;
  return d(r.report.peak_memory - model_state(r.plan.program(rank)));
}

Time kind_time(const Report& r, SpanKind k) {
  for (const OpKindRow& row : r.op_kinds) {
    if (row.kind == k) return row.per_rank;
  }
  return Time{};
}

// What changed between two runs, largest first: for a verdict's reason.
std::string drivers(const RunResult& b, const RunResult& t) {
  std::string out = "step " + format_value(b.report.step_time.seconds()) + " s → " + format_value(t.report.step_time.seconds()) + " s";
  std::vector<std::pair<double, std::string>> changes;
  for (SpanKind k : {SpanKind::Gemm, SpanKind::Attention, SpanKind::MemoryBound, SpanKind::Optimizer, SpanKind::Collective, SpanKind::SendRecv}) {
    const double delta = (kind_time(t.report, k) - kind_time(b.report, k)).seconds();
    if (delta != 0) changes.emplace_back(std::abs(delta), to_string(k) + " " + (delta > 0 ? "+" : "−") + format_value(std::abs(delta)) + " s");
  }
  const double bubble = t.report.bubble_fraction * t.report.step_time.seconds() - b.report.bubble_fraction * b.report.step_time.seconds();
  if (bubble != 0) changes.emplace_back(std::abs(bubble), std::string("idle ") + (bubble > 0 ? "+" : "−") + format_value(std::abs(bubble)) + " s");
  std::sort(changes.begin(), changes.end(), [](const auto& x, const auto& y) { return x.first > y.first; });
  for (std::size_t i = 0; i < changes.size() && i < 3; ++i) out += (i == 0 ? "; per rank: " : ", ") + changes[i].second;
  return out;
}

// ---- arguments ----

struct Args {
  const json& j;
  const std::string& path;
  const Claim& claim;
  Runs& runs;
  const RunResult& run(const char* key) const {
    return runs.get(claim, read_name(required(j, path, key, "a run of the claim"), child(path, key)));
  }
  double number(const char* key) const { return read_number(required(j, path, key), child(path, key), "a number"); }
  TransformerModel model() const { return model_from_json(required(j, path, "model", "a model, as experiments give it"), child(path, "model")); }
};

using Fn = MetricValue (*)(const Args&);

MetricValue compare(const Args& a, double (*value)(const RunResult&), bool reduction_pct, bool speedup = false) {
  const RunResult& b = a.run("baseline");
  const RunResult& t = a.run("treatment");
  const double vb = value(b), vt = value(t);
  MetricValue m;
  m.why = drivers(b, t);
  if (speedup) m.value = vt > 0 ? vb / vt : std::nan("");
  else if (reduction_pct) m.value = vb > 0 ? 100 * (1 - vt / vb) : std::nan("");
  return m;
}

double step_s(const RunResult& r) { return r.report.step_time.seconds(); }
double executed(const RunResult& r) { return r.plan.executed_flops(); }
double peak(const RunResult& r) { return d(r.report.peak_memory); }
double total_mem(const RunResult& r) { return total_memory(r.report); }
double traffic(const RunResult& r) { return collective_bus_bytes(r.plan, true); }
double every_traffic(const RunResult& r) { return collective_bus_bytes(r.plan, false); }

MetricValue one(const Args& a, double (*value)(const RunResult&)) {
  const RunResult& r = a.run("run");
  return {value(r), "", ""};
}

const TgcParams* tgc_of(const RunResult& r, TgcParams& out) {
  for (const TechniqueConfig& t : r.experiment.techniques) {
    if (t.pass != "tgc") continue;
    json entry = t.params;
    entry["pass"] = "tgc";
    out = tgc_params_from_json(entry, "");
    return &out;
  }
  return nullptr;
}

// Σ over ranks of each figure of the ranks' planned arenas (passes/zrdf.hpp). Fails naming the run when a
// rank has none.
struct ArenaSums {
  double size = 0, lower_bound = 0, no_reuse = 0, caching_allocator = 0;
};

ArenaSums arena_sums(const Args& a) {
  const RunResult& r = a.run("run");
  ArenaSums s;
  for (int p : r.plan.program_of_rank) {
    const Arena& x = r.plan.programs[static_cast<std::size_t>(p)].arena;
    if (x.empty()) fail(a.path + "/run", "the run has no planned arena: it needs a zrdf technique");
    s.size += d(x.size);
    s.lower_bound += d(x.lower_bound);
    s.no_reuse += d(x.no_reuse);
    s.caching_allocator += d(x.caching_allocator);
  }
  return s;
}

MetricValue zrdf_memory(const Args& a) {
  check_keys(a.j, a.path, {"name", "run", "figure"});
  const std::string figure = read_string(required(a.j, a.path, "figure", "arena, lower_bound, no_reuse or caching_allocator"), a.path + "/figure");
  const std::map<std::string, double ArenaSums::*> figures = {{"arena", &ArenaSums::size},
                                                              {"lower_bound", &ArenaSums::lower_bound},
                                                              {"no_reuse", &ArenaSums::no_reuse},
                                                              {"caching_allocator", &ArenaSums::caching_allocator}};
  const auto it = figures.find(figure);
  if (it == figures.end()) fail(a.path + "/figure", "unknown figure '" + figure + "'; accepted: arena, lower_bound, no_reuse, caching_allocator");
  return {arena_sums(a).*(it->second) / 1e9, "", ""};
}

// Σ over ranks of the planned arenas and of another figure of theirs.
std::pair<double, double> arena_against(const Args& a, const ArenaSums& s) {
  check_keys(a.j, a.path, {"name", "run", "against"});
  const std::string against = read_string(required(a.j, a.path, "against", "caching_allocator or no_reuse"), a.path + "/against");
  if (against != "caching_allocator" && against != "no_reuse") fail(a.path + "/against", "expected caching_allocator or no_reuse, got '" + against + "'");
  return {s.size, against == "no_reuse" ? s.no_reuse : s.caching_allocator};
}

std::string arena_why(const ArenaSums& s) {
  return "Σ over ranks: planned arenas " + format_value(s.size / 1e9) + " GB, live-bytes lower bound " + format_value(s.lower_bound / 1e9) +
         " GB, PyTorch caching allocator " + format_value(s.caching_allocator / 1e9) + " GB: no reuse goes below the bytes live at once";
}

MetricValue zrdf_reduction(const Args& a) {
  const ArenaSums s = arena_sums(a);
  const auto [arena, other] = arena_against(a, s);
  return {100 * (1 - arena / other), arena_why(s), ""};
}

MetricValue zrdf_ratio(const Args& a) {
  const ArenaSums s = arena_sums(a);
  const auto [arena, other] = arena_against(a, s);
  return {other / arena, arena_why(s), ""};
}

MetricValue compute_gain(const Args& a) {
  check_keys(a.j, a.path, {"name", "baseline", "treatment"});
  const RunResult& b = a.run("baseline");
  const RunResult& t = a.run("treatment");
  return {100 * (t.report.compute_fraction - b.report.compute_fraction), drivers(b, t), ""};
}

MetricValue zrdf_reuse(const Args& a) {
  check_keys(a.j, a.path, {"name", "run"});
  const ArenaSums s = arena_sums(a);
  MetricValue m{100 * (1 - s.size / s.no_reuse), "", ""};
  m.why = "planned arenas " + format_value(s.size / 1e9) + " GB for " + format_value(s.no_reuse / 1e9) +
          " GB allocated over an iteration; PyTorch's caching allocator would reserve " + format_value(s.caching_allocator / 1e9) + " GB";
  return m;
}

MetricValue payload_reduction(const Args& a) {
  check_keys(a.j, a.path, {"name", "run"});
  const RunResult& r = a.run("run");
  TgcParams p;
  if (!tgc_of(r, p)) fail(a.path + "/run", "the run has no tgc technique");
  // Every gradient element of the run, in the dtype its tensors hold, against the payload that carries it.
  double dense = 0, payload = 0;
  for (int pr = 0; pr < static_cast<int>(r.plan.programs.size()); ++pr) {
    for (const ParamTensor& t : r.plan.programs[static_cast<std::size_t>(pr)].params) {
      if (!t.trainable) continue;
      dense += d(t.elements * gradient_bytes_per_element(t.dtype));
      payload += d(tgc_payload_bytes(t.elements, p));
    }
  }
  MetricValue m{100 * (1 - payload / dense), "", ""};
  m.why = "payload " + format_value(payload / 1e6) + " MB for " + format_value(dense / 1e6) + " MB of gradients";
  return m;
}

MetricValue time_exponent(const Args& a) {
  check_keys(a.j, a.path, {"name", "runs", "x"});
  const json& names = required(a.j, a.path, "runs", "the runs, in order of x");
  const json& xs = required(a.j, a.path, "x", "the x of each run");
  if (!names.is_array() || names.size() < 2) fail(a.path + "/runs", "expected an array of at least two run names");
  if (!xs.is_array() || xs.size() != names.size()) fail(a.path + "/x", "expected an array of one number per run");
  std::vector<double> lx, lt;
  for (std::size_t i = 0; i < names.size(); ++i) {
    const double x = read_number(xs[i], child(a.path + "/x", i), "a number > 0");
    if (x <= 0 || (i > 0 && std::log(x) <= lx.back())) fail(child(a.path + "/x", i), "expected positive numbers in increasing order");
    const RunResult& r = a.runs.get(a.claim, read_name(names[i], child(a.path + "/runs", i)));
    lx.push_back(std::log(x));
    lt.push_back(std::log(step_s(r)));
  }
  // Least squares of log t on log x; with two runs, the exponent between them.
  const double n = d(static_cast<std::int64_t>(lx.size()));
  double mx = 0, mt = 0;
  for (std::size_t i = 0; i < lx.size(); ++i) {
    mx += lx[i] / n;
    mt += lt[i] / n;
  }
  double sxt = 0, sxx = 0;
  for (std::size_t i = 0; i < lx.size(); ++i) {
    sxt += (lx[i] - mx) * (lt[i] - mt);
    sxx += (lx[i] - mx) * (lx[i] - mx);
  }
  MetricValue m{sxt / sxx, "", ""};
  m.why = "time " + format_value(std::exp(lt[0])) + " s at " + format_value(std::exp(lx[0]));
  std::string steps;
  for (std::size_t i = 1; i < lx.size(); ++i) {
    m.why += ", " + format_value(std::exp(lt[i])) + " s at " + format_value(std::exp(lx[i]));
    steps += (i > 1 ? ", " : "") + format_value(std::exp(lx[i - 1])) + "→" + format_value(std::exp(lx[i])) + " " +
             format_value((lt[i] - lt[i - 1]) / (lx[i] - lx[i - 1]));
  }
  if (lx.size() > 2) m.why += "; exponent between neighbours: " + steps;
  return m;
}

MetricValue lora_ratio(const Args& a) {
  check_keys(a.j, a.path, {"name", "run"});
  const RunResult& r = a.run("run");
  for (const TechniqueConfig& t : r.experiment.techniques) {
    if (t.pass != "lora") continue;
    json entry = t.params;
    entry["pass"] = "lora";
    const LoraParams p = lora_params_from_json(entry, "");
    const std::int64_t all = parameter_count(r.experiment.model).total(), trained = lora_trainable_parameters(r.experiment.model, p);
    MetricValue m{d(all) / d(trained), "", ""};
    m.why = format_value(d(trained)) + " trainable parameters of " + format_value(d(all));
    return m;
  }
  fail(a.path + "/run", "the run has no lora technique");
}

// ---- arithmetic ----

MetricValue attention_topk(const Args& a) {
  check_keys(a.j, a.path, {"name", "model", "k"});
  const TransformerModel m = a.model();
  const double k = a.number("k");
  if (k < 1 || k > d(m.seq_len)) fail(a.path + "/k", "expected 1 <= k <= the model's seq_len");
  double scores = 0, context = 0;
  for (const OpCost& op : layer_forward_ops(m, OpContext{})) {
    if (op.name == "attn_scores_fwd") scores = op.flops;
    if (op.name == "attn_context_fwd") context = op.flops;
  }
  MetricValue v{(scores + context * k / d(m.seq_len)) / (scores + context), "", ""};
  v.why = "QKᵀ is computed in full to find each query's top " + format_value(k) + " of " + std::to_string(m.seq_len) +
          " keys; only ·V shrinks (to " + format_value(k / d(m.seq_len)) + ")";
  return v;
}

MetricValue head_gating(const Args& a) {
  check_keys(a.j, a.path, {"name", "model", "active_fraction"});
  const TransformerModel m = a.model();
  const double f = a.number("active_fraction");
  if (f < 0 || f > 1) fail(a.path + "/active_fraction", "expected a fraction in [0, 1]");
  const ParameterCount pc = parameter_count(m);
  // A head owns its rows of the QKV weight and bias and its columns of the projection: all of the
  // attention's parameters but the projection's bias (h), which is added after the heads are summed.
  const std::int64_t per_head_share = pc.attention - m.hidden;
  const double removed = d(pc.layers) * (1 - f) * d(per_head_share);
  MetricValue v{100 * removed / d(pc.total()), "", ""};
  v.why = "attention heads hold " + format_value(d(per_head_share)) + " of a layer's " + format_value(d(pc.per_layer())) +
          " parameters (4h²+3h: their QKV rows and projection columns); the FFN and embeddings stay";
  return v;
}

MetricValue weight_bits(const Args& a) {
  check_keys(a.j, a.path, {"name", "bits", "block", "baseline_dtype"});
  kernels::QuantSpec spec;
  spec.bits = static_cast<int>(read_int(required(a.j, a.path, "bits"), a.path + "/bits", 2, 16));
  spec.block = static_cast<std::size_t>(read_int(required(a.j, a.path, "block", "elements per scale"), a.path + "/block", 8, 1 << 20));
  const DType base = read_named(required(a.j, a.path, "baseline_dtype"), a.path + "/baseline_dtype", parse_dtype);
  const std::size_t n = spec.block * 1000000;
  double payload = 0;
  try {
    payload = d(static_cast<std::int64_t>(kernels::quant_payload_bytes(n, spec)));
  } catch (const std::invalid_argument& e) {
    fail(a.path, e.what());
  }
  MetricValue v{payload / (d(static_cast<std::int64_t>(n)) * d(bytes_per_element(base))), "", ""};
  v.why = std::to_string(spec.bits) + "-bit codes plus a 4-byte scale per " + std::to_string(spec.block) + " weights, against " + dtype_name(base);
  return v;
}

TransformerModel with_experts(const Args& a, TransformerModel m) {
  m.experts = read_int(required(a.j, a.path, "experts"), a.path + "/experts", 1, 1 << 16);
  m.top_k = a.j.contains("top_k") ? read_int(a.j["top_k"], a.path + "/top_k", 1, m.experts) : 1;
  return m;
}

MetricValue moe_increase(const Args& a) {
  check_keys(a.j, a.path, {"name", "model", "experts", "top_k"});
  const TransformerModel dense = a.model();
  const TransformerModel moe = with_experts(a, dense);
  const double pd = d(parameter_count(dense).total()), pm = d(parameter_count(moe).total());
  return {100 * (pm / pd - 1), "each layer's FFN (2hf+f+h parameters) exists once per expert, plus an h·E router", ""};
}

MetricValue moe_active(const Args& a) {
  check_keys(a.j, a.path, {"name", "model", "experts", "top_k"});
  const TransformerModel dense = a.model();
  const TransformerModel moe = with_experts(a, dense);
  return {d(parameter_count(moe).active(moe.top_k)) / d(parameter_count(dense).total()), "", ""};
}

// ---- devices (core's presets, the simulator's compute model) ----

DType dtype_arg(const Args& a, const char* key) {
  return read_named(required(a.j, a.path, key, "a dtype"), child(a.path, key), parse_dtype);
}

DeviceSpec device_arg(const Args& a) {
  const std::string name = read_name(required(a.j, a.path, "device", "a device preset"), a.path + "/device");
  try {
    return device_preset(name);
  } catch (const UnknownName& e) {
    fail(a.path + "/device", e.what());
  }
}

// The device's datasheet peak for `t`; fails naming `key` when it has none.
double peak_arg(const Args& a, const DeviceSpec& device, const char* key) {
  const DType t = dtype_arg(a, key);
  const double peak = device_peak(device, t);
  if (peak <= 0) fail(child(a.path, key), device.name + " has no " + dtype_name(t) + " peak");
  return peak;
}

MetricValue device_peak_ratio(const Args& a) {
  check_keys(a.j, a.path, {"name", "device", "dtype", "baseline_dtype"});
  const DeviceSpec device = device_arg(a);
  const double peak = peak_arg(a, device, "dtype"), base = peak_arg(a, device, "baseline_dtype");
  MetricValue v{peak / base, "", ""};
  v.why = device.name + " dense peaks (device preset): " + format_value(peak / 1e12) + " TFLOP/s " +
          dtype_name(dtype_arg(a, "dtype")) + " over " + format_value(base / 1e12) + " TFLOP/s " + dtype_name(dtype_arg(a, "baseline_dtype")) +
          "; without tensor cores (fp32) " + format_value(device.peak_fp32 / 1e12) + " TFLOP/s";
  return v;
}

MetricValue gemm_efficiency(const Args& a) {
  check_keys(a.j, a.path, {"name", "device", "dtype"});
  const DeviceSpec device = device_arg(a);
  const double peak = peak_arg(a, device, "dtype");
  const DType t = dtype_arg(a, "dtype");
  const sim::ComputeProfile profile = sim::roofline_profile(device);
  const double rate = profile.gemm_rate.at(t);
  MetricValue v{100 * rate / peak, "", ""};
  v.why = "the simulator's " + device.name + " " + dtype_name(t) + " GEMM rate, " + format_value(rate / 1e12) + " of " +
          format_value(peak / 1e12) + " TFLOP/s (its default efficiency, sim/compute_model.hpp)";
  return v;
}

MetricValue ratio(const Args& a) {
  check_keys(a.j, a.path, {"name", "numerator", "denominator", "unit"});
  const double den = a.number("denominator");
  if (den == 0) fail(a.path + "/denominator", "must not be 0");
  MetricValue v{a.number("numerator") / den, "", ""};
  if (a.j.contains("unit")) v.unit = read_string(a.j["unit"], a.path + "/unit");
  return v;
}

// A metric whose value is in `unit`, unless it states its own (ratio's "unit").
template <Fn F>
MetricFn wrap(std::string unit) {
  return [unit](const json& j, const std::string& path, const Claim& claim, Runs& runs) {
    MetricValue v = F(Args{j, path, claim, runs});
    if (v.unit.empty()) v.unit = unit;
    return v;
  };
}

template <double (*Value)(const RunResult&), bool Pct, bool Speedup = false>
MetricValue compared(const Args& a) {
  check_keys(a.j, a.path, {"name", "baseline", "treatment"});
  return compare(a, Value, Pct, Speedup);
}

template <double (*Value)(const RunResult&)>
MetricValue single(const Args& a) {
  check_keys(a.j, a.path, {"name", "run"});
  return one(a, Value);
}

double step_ms(const RunResult& r) { return 1e3 * step_s(r); }
double tflops(const RunResult& r) { return r.report.tflops_per_gpu; }
double mfu(const RunResult& r) { return 100 * r.report.mfu; }
double compute_pct(const RunResult& r) { return 100 * r.report.compute_fraction; }
double bubble_ms(const RunResult& r) { return 1e3 * r.report.bubble_fraction * r.report.step_time.seconds(); }
double total_gb(const RunResult& r) { return total_memory(r.report) / 1e9; }
double peak_gb(const RunResult& r) { return d(r.report.peak_memory) / 1e9; }
double activation(const RunResult& r) { return activation_peak(r); }

}  // namespace

Registry<MetricFn> metrics() {
  Registry<MetricFn> r("metric");
  r.add("step_speedup", "baseline / treatment step time", wrap<compared<step_s, false, true>>("×"));
  r.add("step_reduction_pct", "100·(1 − treatment/baseline step time)", wrap<compared<step_s, true>>("%"));
  r.add("executed_flops_reduction_pct", "executed matmul FLOPs cut", wrap<compared<executed, true>>("%"));
  r.add("peak_memory_reduction_pct", "largest per-rank peak memory cut", wrap<compared<peak, true>>("%"));
  r.add("activation_memory_reduction_pct", "peak minus model state, cut", wrap<compared<activation, true>>("%"));
  r.add("gradient_traffic_reduction_pct", "bytes a rank moves for gradients, cut", wrap<compared<traffic, true>>("%"));
  r.add("traffic_reduction_pct", "bytes a rank moves in every collective, cut", wrap<compared<every_traffic, true>>("%"));
  r.add("compute_pct_gain", "treatment − baseline compute share, points", wrap<compute_gain>("points"));
  r.add("zrdf_memory_reduction_pct", "planned arenas against another allocator, cut", wrap<zrdf_reduction>("%"));
  r.add("zrdf_memory_ratio", "another allocator's memory over the planned arenas", wrap<zrdf_ratio>("×"));
  r.add("total_memory_reduction_pct", "Σ over ranks of peak memory, cut", wrap<compared<total_mem, true>>("%"));
  r.add("time_exponent", "how step time scales with x", wrap<time_exponent>(""));
  r.add("lora_trainable_parameters_ratio", "all / LoRA-trainable parameters", wrap<lora_ratio>("×"));
  r.add("step_time_s", "step time", wrap<single<step_s>>("s"));
  r.add("step_time_ms", "step time in milliseconds", wrap<single<step_ms>>("ms"));
  r.add("tflops_per_gpu", "model TFLOP/s per GPU", wrap<single<tflops>>("TFLOP/s"));
  r.add("mfu_pct", "model FLOPs utilisation", wrap<single<mfu>>("%"));
  r.add("compute_pct", "share of the step computing", wrap<single<compute_pct>>("%"));
  r.add("bubble_ms", "mean idle time per rank", wrap<single<bubble_ms>>("ms"));
  r.add("total_memory_GB", "Σ over ranks of peak memory", wrap<single<total_gb>>("GB"));
  r.add("peak_memory_GB", "largest per-rank peak memory", wrap<single<peak_gb>>("GB"));
  r.add("zrdf_reuse_pct", "memory reuse of the planned arenas", wrap<zrdf_reuse>("%"));
  r.add("zrdf_memory_GB", "Σ over ranks of an arena figure", wrap<zrdf_memory>("GB"));
  r.add("payload_reduction_pct", "what compression leaves of the gradient bytes", wrap<payload_reduction>("%"));
  r.add("attention_topk_flops_ratio", "top-k attention FLOPs over dense", wrap<attention_topk>(""));
  r.add("head_gating_parameter_reduction_pct", "parameters of gated-off heads", wrap<head_gating>("%"));
  r.add("weight_bits_size_ratio", "quantised weights over baseline dtype", wrap<weight_bits>(""));
  r.add("moe_parameter_increase_pct", "parameters added by experts", wrap<moe_increase>("%"));
  r.add("moe_active_parameter_ratio", "parameters a token touches over dense", wrap<moe_active>("×"));
  r.add("device_peak_ratio", "a device's dense peak in one dtype over another", wrap<device_peak_ratio>("×"));
  r.add("gemm_efficiency_pct", "the simulator's GEMM rate as a share of the device's peak", wrap<gemm_efficiency>("%"));
  r.add("ratio", "numerator / denominator", wrap<ratio>(""));
  return r;
}

MetricValue evaluate(const json& metric, const std::string& path, const Claim& claim, Runs& runs) {
  const std::string name = read_name(required(metric, path, "name"), path + "/name");
  const Registry<MetricFn> all = metrics();
  const MetricFn* fn = all.find(name);
  if (!fn) fail(path + "/name", "unknown metric '" + name + "'; known: " + join(all.names()));
  return (*fn)(metric, path, claim, runs);
}

}  // namespace twinbed::claims
