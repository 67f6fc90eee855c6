// Wall time to simulate one training iteration of GPT-3 175B (model_preset("gpt3-175b")) with the
// flow-level network at Representative fidelity, on DGX A100 clusters (dgx-a100 preset: 8 GPUs per
// node on NVSwitch, 8 HDR NICs per node): TP 8, PP 16, micro-batch 1, selective recomputation, and
// DP 8 (1,024 GPUs) growing to 128 (16,384 GPUs). Weak scaling: 192 micro-batches per pipeline at
// every size (global batch 1,536 at 1,024 GPUs), so each pipeline's work is the same and what grows
// is the data-parallel communication.
//
// Counters: the simulated step time, simulated model TFLOP/s per GPU (training_flops with no
// recomputation, the "model FLOPs" of MFU, / step time / GPUs), ranks actually simulated, ops executed,
// engine events, the plan's stored and unshared op counts, the seconds spent building the plan, and
// the process's peak resident memory.
#include <benchmark/benchmark.h>

#include <chrono>

#include "bench_support.hpp"
#include "twinbed/core/passes.hpp"
#include "twinbed/core/plan.hpp"
#include "twinbed/core/topology_builders.hpp"
#include "twinbed/sim/plan_sim.hpp"

namespace {

void run_gpt3(benchmark::State& state, twinbed::PipelineSchedule schedule, int v, twinbed::sim::Fidelity fidelity,
              twinbed::Topology (*cluster)(int nodes) = twinbed::topo::dgx_a100_cluster) {
  using namespace twinbed;
  const int gpus = static_cast<int>(state.range(0));
  const TransformerModel model = model_preset("gpt3-175b");
  Layout layout;
  layout.tp = 8;
  layout.pp = 16;
  layout.dp = gpus / (layout.tp * layout.pp);
  layout.micro_batch = 1;
  layout.global_batch = 192 * layout.dp;
  layout.schedule = schedule;
  layout.virtual_stages = v;
  layout.recompute = Recompute::Selective;
  const Topology topology = cluster(gpus / 8);
  sim::PlanSimOptions options;
  options.network = "flow";
  options.fidelity = fidelity;
  options.record_spans = false;
  sim::PlanSimStats stats;
  Trace trace;
  double build_seconds = 0;
  std::int64_t stored_ops = 0, total_ops = 0;
  double model_flops = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    const Plan plan = build_plan(model, layout, {gpus, 8});
    build_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    trace = sim::simulate_plan(plan, topology, options, stats);
    stored_ops = 0;
    for (const auto& p : plan.programs) stored_ops += static_cast<std::int64_t>(p.size());
    total_ops = plan.total_ops();
    model_flops = plan.model_flops;
    benchmark::DoNotOptimize(trace.step_time);
  }
  state.counters["step_s"] = trace.step_time.seconds();
  state.counters["TFLOPs_per_gpu"] = model_flops / trace.step_time.seconds() / gpus / 1e12;
  state.counters["sim_ranks"] = stats.simulated_ranks;
  state.counters["ops_executed"] = static_cast<double>(stats.ops_executed);
  state.counters["events"] = static_cast<double>(stats.events);
  state.counters["coll_timings"] = stats.collective_timings;
  state.counters["plan_ops_stored"] = static_cast<double>(stored_ops);
  state.counters["plan_ops_all_ranks"] = static_cast<double>(total_ops);
  state.counters["build_s"] = build_seconds;
  state.counters["peak_rss_MiB"] = bench::peak_rss_mib();
}

void BM_PlanGpt3_1F1B(benchmark::State& state) {
  run_gpt3(state, twinbed::PipelineSchedule::OneFOneB, 1, twinbed::sim::Fidelity::Representative);
}
// The same on DGX H100 nodes (dgx-h100 preset) at 98,304 GPUs (DP 768): the scale target of one
// iteration simulated in <= 10 s and < 4 GiB on one core.
void BM_PlanGpt3_1F1B_H100(benchmark::State& state) {
  run_gpt3(state, twinbed::PipelineSchedule::OneFOneB, 1, twinbed::sim::Fidelity::Representative,
           twinbed::topo::dgx_h100_cluster);
}
void BM_PlanGpt3_Interleaved(benchmark::State& state) {
  run_gpt3(state, twinbed::PipelineSchedule::Interleaved1F1B, 2, twinbed::sim::Fidelity::Representative);
}
void BM_PlanGpt3_1F1B_Coarse(benchmark::State& state) {
  run_gpt3(state, twinbed::PipelineSchedule::OneFOneB, 1, twinbed::sim::Fidelity::Coarse);
}

// Each technique pass's cost on the GPT-3 175B plan of 1,024 GPUs (TP 8, PP 16, 1F1B, selective
// recomputation), against simulating that plan in the same run: counters pass_s, sim_s and
// pass_fraction = pass_s / sim_s (the target is <= 0.1).
void BM_PassCost(benchmark::State& state) {
  using namespace twinbed;
  static const char* const kPasses[] = {
      R"({"pass": "lora", "rank": 8, "targets": ["qkv", "proj", "fc1", "fc2"]})",
      R"({"pass": "precision", "policy": "adaptive", "low": "fp16", "high": "fp32", "low_fraction": 0.7})",
      R"({"pass": "dsa", "density": 0.3, "mode": "prune", "granularity": "block"})",
      R"({"pass": "tgc", "bits": 4, "topk_fraction": 0.01, "hierarchy": "hierarchical"})",
      R"({"pass": "zrdf"})"};
  const nlohmann::json entry = nlohmann::json::parse(kPasses[state.range(0)]);
  const std::unique_ptr<Pass> pass = parse_technique(entry, "/techniques/0");
  state.SetLabel(pass->name());
  Layout layout;
  layout.tp = 8;
  layout.pp = 16;
  layout.dp = 8;
  layout.global_batch = 192 * layout.dp;
  layout.recompute = Recompute::Selective;
  const Plan base = build_plan(model_preset("gpt3-175b"), layout, {1024, 8});
  sim::PlanSimOptions options;
  options.record_spans = false;
  const auto t0 = std::chrono::steady_clock::now();
  benchmark::DoNotOptimize(sim::simulate_plan(base, topo::dgx_a100_cluster(128), options).step_time);
  const double sim_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double pass_seconds = 0;
  for (auto _ : state) {
    state.PauseTiming();
    Plan plan = base;
    state.ResumeTiming();
    const auto p0 = std::chrono::steady_clock::now();
    pass->apply(plan);
    pass_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - p0).count();
    benchmark::DoNotOptimize(plan.programs.size());
  }
  state.counters["pass_s"] = pass_seconds;
  state.counters["sim_s"] = sim_seconds;
  state.counters["pass_fraction"] = pass_seconds / sim_seconds;
}

}  // namespace

BENCHMARK(BM_PassCost)->DenseRange(0, 4)->Unit(benchmark::kMillisecond)->Iterations(1);
BENCHMARK(BM_PlanGpt3_1F1B)->RangeMultiplier(2)->Range(1024, 16384)->Unit(benchmark::kMillisecond)->Iterations(1);
BENCHMARK(BM_PlanGpt3_1F1B_H100)->Arg(98304)->Unit(benchmark::kMillisecond)->Iterations(1);
BENCHMARK(BM_PlanGpt3_Interleaved)->Arg(1024)->Unit(benchmark::kMillisecond)->Iterations(1);
BENCHMARK(BM_PlanGpt3_1F1B_Coarse)->Arg(1024)->Unit(benchmark::kMillisecond)->Iterations(1);
