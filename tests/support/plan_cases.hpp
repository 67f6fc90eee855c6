// The plans the backend tests run: a tiny GPT under the layouts that fit n ranks (data, tensor and
// pipeline parallel; on 4 ranks ZeRO-3 with sequence parallelism, GPipe and interleaved 1F1B), the
// data-parallel one with a planned arena (zrdf), and the data-parallel one under each technique pass.
// Shared by test_same_spans (simulator vs CPU backend) and test_cuda_backend (the CUDA backend's
// planning and its one-GPU run), so both check the same plans.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "twinbed/core/error.hpp"
#include "twinbed/core/passes.hpp"
#include "twinbed/core/passes/zrdf.hpp"
#include "twinbed/core/plan.hpp"

namespace twinbed::test {

struct PlanCase {
  std::string what;
  Plan plan;
};

inline Plan with_techniques(Plan plan, const char* techniques) {
  for (const nlohmann::json& entry : nlohmann::json::parse(techniques)) parse_technique(entry, "/techniques")->apply(plan);
  return plan;
}

inline const std::vector<const char*>& technique_cases() {
  static const std::vector<const char*> cases = {
      R"([{"pass": "tgc", "bits": 8, "topk_fraction": 0.1}])",
      R"([{"pass": "tgc", "bits": 4}])",
      R"([{"pass": "dsa", "density": 0.5, "granularity": "block", "block_size": 16, "mode": "prune", "refresh_every": 2}])",
      R"([{"pass": "dsa", "density": 0.5, "granularity": "nm", "mode": "prune"}])",
      R"([{"pass": "lora", "rank": 4}])",
      R"([{"pass": "precision", "policy": "adaptive", "low": "fp16", "low_fraction": 0.5, "redecide_every": 2, "loss_scaling": "dynamic"}])",
  };
  return cases;
}

inline std::vector<PlanCase> plan_cases(int n) {
  const TransformerModel model = gpt_model("tiny8", 8, 64, 4, 32, 128);
  Layout base;
  base.micro_batch = 1;
  base.bucket_bytes = 16 * KiB;
  std::vector<PlanCase> out;
  auto add = [&](const std::string& what, Layout l) { out.push_back({what, build_plan(model, l, ClusterShape{n, n})}); };
  Layout l = base;
  l.dp = n, l.global_batch = 4 * n;
  add("dp", l);
  if (n >= 2) {
    l = base;
    l.tp = 2, l.pp = n / 2, l.global_batch = 4;
    add("tp pp 1f1b", l);
  }
  if (n == 4) {
    l = base;
    l.dp = 2, l.tp = 2, l.global_batch = 4, l.zero_stage = 3, l.sequence_parallel = true;
    add("zero3 sp", l);
    Layout hybrid = base;
    hybrid.dp = 4, hybrid.global_batch = 8, hybrid.zero_stage = 3, hybrid.zero_shard_ranks = 2;
    add("zero3 hybrid", hybrid);
    l.zero_stage = 1, l.sequence_parallel = false;
    add("zero1", l);
    l = base;
    l.tp = 2, l.pp = 2, l.global_batch = 4, l.schedule = PipelineSchedule::GPipe;
    add("gpipe", l);
    l = base;
    l.pp = 4, l.global_batch = 8, l.schedule = PipelineSchedule::Interleaved1F1B, l.virtual_stages = 2;
    add("interleaved", l);
  }
  PlanCase arena = out.front();
  arena.what += " zrdf";
  apply_zrdf(arena.plan, ZrdfParams{});
  out.push_back(arena);
  for (const char* t : technique_cases()) {
    try {
      out.push_back({out.front().what + " " + t, with_techniques(out.front().plan, t)});
    } catch (const Error&) {
      // A pass that needs more ranks than n (e.g. a reduction over dp = 1) is not a case here.
    }
  }
  return out;
}

}  // namespace twinbed::test
