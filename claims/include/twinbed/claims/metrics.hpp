// Metrics: how a claim's figure is computed from its runs, or — for arithmetic checks — from the
// model and kernel formulas alone. Each is found by name; its arguments are strict JSON
// ({"name": "step_speedup", "baseline": "base", "treatment": "tgc"}), errors naming the path. Each
// gives its value in one unit, registered with it ("%" for the _pct ones, "points" for compute_pct_gain,
// "×" for speedups and the "how many times" ratios, "" for fractions and exponents, or the unit its name
// ends in); a judged figure must be reported in its metric's unit.
//
// Comparisons of two runs (arguments "baseline" and "treatment", run names):
//   step_speedup                    baseline step time / treatment step time (×)
//   step_reduction_pct              100 · (1 − treatment / baseline step time)
//   executed_flops_reduction_pct    100 · (1 − treatment / baseline executed matmul FLOPs (Plan))
//   peak_memory_reduction_pct       100 · (1 − treatment / baseline largest per-rank peak memory)
//   activation_memory_reduction_pct the same for the peak minus the rank's model state (weights,
//                                   gradients, optimizer state)
//   gradient_traffic_reduction_pct  100 · (1 − treatment / baseline bytes a rank sends and receives for
//                                   gradient exchanges per iteration: Σ over its Grads collectives of the
//                                   algorithm-independent bus volume, nccl-tests' busbw factor times S:
//                                   2(n−1)/n for an all-reduce, (n−1)/n for a reduce-scatter, all-gather
//                                   or all-to-all, 1 for a broadcast or reduce; collective_bus_bytes)
//   traffic_reduction_pct           the same over every collective (parameters and activations too)
//   compute_pct_gain                treatment − baseline share of the step spent computing (points)
//   total_memory_reduction_pct      100 · (1 − treatment / baseline Σ over ranks of peak memory)
//   time_exponent                   how step time scales with x (t ∝ xᵉ): the least-squares slope of log t
//                                   on log x over "runs" (two or more run names) at "x" (one positive
//                                   number per run, increasing); with two runs, log(t₂/t₁) / log(x₂/x₁).
//                                   The reason gives the exponent between each pair of neighbours
// One run (argument "run"):
//   step_time_s, step_time_ms, tflops_per_gpu, mfu_pct, compute_pct (the step's compute share), bubble_ms (mean idle
//   time per rank), total_memory_GB (Σ over ranks of peak memory, 1e9 B), peak_memory_GB (largest rank)
//   zrdf_reuse_pct                  100 · Σ(no_reuse − arena) / Σ no_reuse over the ranks' arenas
//   zrdf_memory_GB                  Σ over ranks of an arena figure: "figure": arena | lower_bound |
//                                   no_reuse | caching_allocator
//   zrdf_memory_reduction_pct       100 · (1 − Σ arenas / Σ "against": caching_allocator | no_reuse)
//   zrdf_memory_ratio               Σ "against" / Σ arenas (how much larger a model the same memory holds,
//                                   when memory grows with the model)
//   lora_trainable_parameters_ratio the model's parameters over those LoRA trains (the run's lora entry)
//   payload_reduction_pct           100 · (1 − bytes the run's gradient exchanges carry / the bytes its
//                                   gradients have): what compression leaves on the wire, before the
//                                   collective algorithm's factor
// Arithmetic (no run; "model": a model config as experiments write it):
//   attention_topk_flops_ratio      attention matmul FLOPs of a layer when each query keeps only its "k"
//                                   largest scores, over the dense ones: the scores QKᵀ are still all
//                                   computed (choosing the top k needs them), the context ·V shrinks to k/s
//   head_gating_parameter_reduction_pct   parameters removed when only "active_fraction" of the heads
//                                   remain (their QKV rows and projection columns), over the model's
//   weight_bits_size_ratio          bytes of weights quantised to "bits" with a 4-byte scale per "block"
//                                   (payload.hpp) over the same weights in "baseline_dtype"
//   moe_parameter_increase_pct      100 · (parameters with the FFN made "experts" experts / dense − 1)
//   moe_active_parameter_ratio      parameters a token touches with "experts" and "top_k", over dense
//   device_peak_ratio               the datasheet dense peak of preset "device" (core's device.hpp) in
//                                   "dtype" over its peak in "baseline_dtype" (×)
//   gemm_efficiency_pct             100 · the simulator's GEMM rate for "device" and "dtype" (its roofline
//                                   compute model's default efficiency) / the device's peak in it
//   ratio                           "numerator" / "denominator": plain arithmetic on stated numbers, in
//                                   "unit" (optional, default "")
#pragma once

#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "twinbed/claims/claim.hpp"
#include "twinbed/claims/runs.hpp"
#include "twinbed/core/plan.hpp"
#include "twinbed/core/registry.hpp"

namespace twinbed::claims {

struct MetricValue {
  std::optional<double> value;
  std::string why;   // what drives the figure (for two runs: what changed between them), for the verdict
  std::string unit;  // the unit of value, as a claim file writes units ("%", "×", "ms", "" for a number)
};

using MetricFn = std::function<MetricValue(const nlohmann::json& args, const std::string& path, const Claim& claim, Runs& runs)>;

Registry<MetricFn> metrics();

// Mean over ranks of the bytes a rank sends and receives in its collectives per iteration (only its
// gradient exchanges when `grads_only`): Σ of each collective's bytes times nccl-tests' bus-bandwidth
// factor for its group (busbw_factor, schedule.hpp), the algorithm-independent bus volume. What the
// *traffic_reduction_pct metrics compare.
double collective_bus_bytes(const Plan& plan, bool grads_only);

// Evaluates {"name": ..., args} at `path`; ConfigError for an unknown metric (listing the known) or a
// bad argument.
MetricValue evaluate(const nlohmann::json& metric, const std::string& path, const Claim& claim, Runs& runs);

}  // namespace twinbed::claims
