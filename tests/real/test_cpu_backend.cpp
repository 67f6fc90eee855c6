// The CPU real backend executing whole Plans over MPI, on however many ranks mpirun started (ctest runs
// 2 and 4). A tiny GPT under every tp / pp / dp layout that fits the ranks; the Trace is checked against
// the plan on rank 0 (which holds every rank's spans). Every rank calls run() the same number of times
// in the same order (run() is collective), and checks never stop a rank early: EXPECT, not ASSERT,
// before any call that communicates.
#include <mpi.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "twinbed/core/error.hpp"
#include "twinbed/core/passes.hpp"
#include "twinbed/core/plan_exec.hpp"
#include "twinbed/core/passes/zrdf.hpp"
#include "twinbed/core/plan.hpp"
#include "twinbed/real/cpu_backend.hpp"
#include "twinbed/real/mpi.hpp"
#include "support/mpi_world.hpp"
#include "cpu_compute.hpp"

namespace twinbed::real {
namespace {

using test::world_rank;
using test::world_size;

TransformerModel tiny() { return gpt_model("tiny", 2, 64, 4, 32, 128); }

Plan tiny_plan(int dp, int tp, int pp) {
  Layout l;
  l.dp = dp;
  l.tp = tp;
  l.pp = pp;
  l.micro_batch = 1;
  l.global_batch = dp * 4;  // 4 micro-batches per pipeline
  l.bucket_bytes = 16 * KiB;  // several gradient buckets
  return build_plan(tiny(), l, ClusterShape{dp * tp * pp, dp * tp * pp});
}

// The layouts of 2 parallel degrees in {dp, tp, pp} whose product is the world size.
std::vector<std::tuple<int, int, int>> layouts(int n) {
  if (n == 2) return {{2, 1, 1}, {1, 2, 1}, {1, 1, 2}};
  if (n == 4) return {{2, 2, 1}, {1, 2, 2}, {2, 1, 2}};
  return {{n, 1, 1}};
}

std::string describe(const std::tuple<int, int, int>& l) {
  return "dp=" + std::to_string(std::get<0>(l)) + " tp=" + std::to_string(std::get<1>(l)) +
         " pp=" + std::to_string(std::get<2>(l));
}

// The ops that record a span: all but Alloc/Free (memory samples) and Recv (a message is drawn once, by
// its Send).
bool executed(const PlanOp& op) { return records_span(op.kind); }

// Which span each op of each rank produced: ops and spans with the same (stream, span kind, name,
// micro-batch) are paired in order (program order for ops, start order for spans); -1 when unpaired.
// Counts must agree key by key, which is what "one span per executed op" means.
std::vector<std::vector<int>> pair_spans(const Plan& plan, const Trace& trace, const std::string& what) {
  using Key = std::tuple<int, int, std::uint32_t, std::int32_t>;
  std::vector<std::vector<int>> span_of(static_cast<std::size_t>(plan.world_size()));
  for (int r = 0; r < plan.world_size(); ++r) {
    const Program& prog = plan.program(r);
    std::map<Key, std::vector<int>> ops, spans;
    for (std::size_t i = 0; i < prog.size(); ++i) {
      const PlanOp& op = prog.ops[i];
      if (executed(op))
        ops[{static_cast<int>(op.stream), static_cast<int>(op.span), op.name, op.micro_batch}].push_back(static_cast<int>(i));
    }
    for (std::size_t s = 0; s < trace.spans.size(); ++s) {  // ordered by (rank, start)
      const Span& sp = trace.spans[s];
      if (sp.rank == r)
        spans[{static_cast<int>(sp.stream), static_cast<int>(sp.kind), sp.name, sp.micro_batch}].push_back(static_cast<int>(s));
    }
    auto& out = span_of[static_cast<std::size_t>(r)];
    out.assign(prog.size(), -1);
    EXPECT_EQ(ops.size(), spans.size()) << what << " rank " << r;
    for (const auto& [key, list] : ops) {
      auto it = spans.find(key);
      const std::size_t got = it == spans.end() ? 0 : it->second.size();
      EXPECT_EQ(list.size(), got) << what << " rank " << r << " op '" << plan.names[std::get<2>(key)] << "' mb "
                                  << std::get<3>(key);
      for (std::size_t k = 0; k < std::min(list.size(), got); ++k)
        out[static_cast<std::size_t>(list[k])] = it->second[k];
    }
  }
  return span_of;
}

void check_trace(const Plan& plan, const Trace& trace, const std::string& what) {
  const int n = plan.world_size();
  EXPECT_EQ(trace.backend, "real-cpu");
  EXPECT_EQ(trace.world_size, n);
  EXPECT_EQ(trace.names, plan.names);
  ASSERT_EQ(trace.recorded_rank.size(), static_cast<std::size_t>(n));
  for (int r = 0; r < n; ++r) EXPECT_EQ(trace.recorded_rank[static_cast<std::size_t>(r)], r);

  // Exactly one span per executed (non-Alloc/Free/Recv) op.
  std::int64_t expected = 0;
  for (int r = 0; r < n; ++r)
    for (const PlanOp& op : plan.program(r).ops) expected += executed(op) ? 1 : 0;
  EXPECT_EQ(static_cast<std::int64_t>(trace.spans.size()), expected) << what;
  const auto span_of = pair_spans(plan, trace, what);

  Time latest;
  for (const Span& s : trace.spans) {
    EXPECT_LE(s.start, s.end) << what;
    EXPECT_GE(s.start, Time()) << what;
    latest = std::max(latest, s.end);
  }
  EXPECT_EQ(trace.step_time, latest) << what;
  EXPECT_GT(trace.step_time, Time()) << what;

  // FIFO streams: spans of one rank's Compute (and Collective) stream never overlap.
  for (int r = 0; r < n; ++r) {
    for (StreamKind stream : {StreamKind::Compute, StreamKind::Collective}) {
      Time last_end;
      for (const Span& s : trace.spans) {
        if (s.rank != r || s.stream != stream) continue;
        EXPECT_GE(s.start, last_end) << what << " rank " << r << " " << to_string(stream) << " '" << trace.names[s.name] << "'";
        last_end = s.end;
      }
    }
  }

  // Every op that waits on a Recv starts after the matching Send started; every collective's members
  // overlap in time.
  std::map<std::tuple<int, int, std::int64_t>, std::vector<const Span*>> instances;  // (kind, group, tag)
  int messages = 0;
  for (int r = 0; r < n; ++r) {
    const Program& prog = plan.program(r);
    for (std::size_t i = 0; i < prog.size(); ++i) {
      const PlanOp& op = prog.ops[i];
      const int si = span_of[static_cast<std::size_t>(r)][i];
      if (op.kind == OpKind::Recv) {
        const int peer = r + op.peer_offset;
        const Program& other = plan.program(peer);
        int send_span = -1;
        for (std::size_t j = 0; j < other.size() && send_span < 0; ++j) {
          const PlanOp& o = other.ops[j];
          if (o.kind == OpKind::Send && o.peer_offset == -op.peer_offset && o.tag == op.tag)
            send_span = span_of[static_cast<std::size_t>(peer)][j];
        }
        EXPECT_GE(send_span, 0) << what << " receive " << peer << " -> " << r << " tag " << op.tag << " has no send span";
        if (send_span < 0) continue;
        const Time sent = trace.spans[static_cast<std::size_t>(send_span)].start;
        int waiting = 0;
        for (std::size_t k = i + 1; k < prog.size(); ++k) {
          const std::uint32_t* deps = prog.deps_of(k);
          if (std::find(deps, deps + prog.num_deps(k), static_cast<std::uint32_t>(i)) == deps + prog.num_deps(k)) continue;
          const int sk = span_of[static_cast<std::size_t>(r)][k];
          if (sk < 0) continue;
          EXPECT_GE(trace.spans[static_cast<std::size_t>(sk)].start, sent)
              << what << " message " << peer << " -> " << r << " tag " << op.tag << ": '" << plan.names[prog.ops[k].name]
              << "' started before it was sent";
          ++waiting;
        }
        EXPECT_GT(waiting, 0) << what << " nothing recorded waits on receive " << peer << " -> " << r << " tag " << op.tag;
        ++messages;
        continue;
      }
      if (si < 0) continue;
      const Span& span = trace.spans[static_cast<std::size_t>(si)];
      if (op.kind == OpKind::Collective) {
        const int group = plan.group_set(op.group).group_of_rank[static_cast<std::size_t>(r)];
        instances[{static_cast<int>(op.group), group, op.tag}].push_back(&span);
      }
    }
  }
  if (plan.layout.pp > 1) {
    EXPECT_GT(messages, 0) << what;
  }
  for (const auto& [key, spans] : instances) {
    const int kind = std::get<0>(key), group = std::get<1>(key);
    EXPECT_EQ(spans.size(), plan.groups[static_cast<std::size_t>(kind)].members[static_cast<std::size_t>(group)].size())
        << what;
    Time last_start, first_end = Time::max();
    for (const Span* s : spans) {
      last_start = std::max(last_start, s->start);
      first_end = std::min(first_end, s->end);
    }
    EXPECT_LE(last_start, first_end) << what << " " << to_string(static_cast<GroupKind>(kind)) << " group " << group
                                     << " collective " << std::get<2>(key) << " members do not overlap";
  }
  if (plan.layout.tp > 1 || plan.layout.dp > 1) {
    EXPECT_FALSE(instances.empty()) << what;
  }

  // Memory: samples per rank in time order, back at the model-state level (weights, gradients,
  // optimizer state) at the end, above it at the peak (activations).
  for (int r = 0; r < n; ++r) {
    Bytes state = 0;
    for (const PlanOp& op : plan.program(r).ops) {
      // What lives across iterations: the model state, and what a technique keeps (TGC's residual, DSA's masks).
      const bool model_state = op.tensor_class == TensorClass::Weights || op.tensor_class == TensorClass::Grads ||
                               op.tensor_class == TensorClass::Optimizer || op.tensor_class == TensorClass::TechniqueState;
      if (model_state && op.kind == OpKind::Alloc) state += op.bytes;
      if (model_state && op.kind == OpKind::Free) state -= op.bytes;
    }
    std::vector<MemorySample> mine;
    for (const MemorySample& m : trace.memory)
      if (m.rank == r) mine.push_back(m);
    ASSERT_FALSE(mine.empty()) << what << " rank " << r;
    Bytes peak = 0;
    for (std::size_t k = 0; k < mine.size(); ++k) {
      if (k > 0) {
        EXPECT_GE(mine[k].time, mine[k - 1].time) << what;
      }
      peak = std::max(peak, mine[k].bytes);
    }
    EXPECT_EQ(mine.back().bytes, state) << what << " rank " << r;
    EXPECT_GT(peak, state) << what << " rank " << r;
  }
}

// Only rank 0 holds the full trace; the others hold their own spans.
void check_local(const Plan& plan, const Trace& trace, int rank, const std::string& what) {
  std::int64_t expected = 0;
  for (const PlanOp& op : plan.program(rank).ops) expected += executed(op) ? 1 : 0;
  EXPECT_EQ(static_cast<std::int64_t>(trace.spans.size()), expected) << what;
  for (const Span& s : trace.spans) EXPECT_EQ(s.rank, rank) << what;
  EXPECT_GT(trace.step_time, Time()) << what;
}

void run_and_check(const CpuBackendOptions& options, const std::string& label) {
  const int n = world_size(), me = world_rank();
  CpuBackend backend(options);
  EXPECT_EQ(backend.name(), "real-cpu");
  for (const auto& l : layouts(n)) {
    const Plan plan = tiny_plan(std::get<0>(l), std::get<1>(l), std::get<2>(l));
    const std::string what = label + " " + describe(l);
    const Trace trace = backend.run(plan);
    if (me == 0) {
      check_trace(plan, trace, what);
    } else {
      check_local(plan, trace, me, what);
    }
  }
}

TEST(CpuBackend, NativeCollectivesGiveOneSpanPerOpInACausalTrace) {
  CpuBackendOptions options;
  options.warmup_iters = 1;
  run_and_check(options, "native");
}

TEST(CpuBackend, RingScheduleOverPointToPointGivesTheSameShapeOfTrace) {
  CpuBackendOptions options;
  options.collective_algorithm = "ring";
  options.warmup_iters = 0;
  run_and_check(options, "ring");
}

// ZeRO stages, sequence parallelism and the other pipeline schedules put collectives on both streams,
// reduce-scatters and all-gathers of awkward sizes (rounded up to the element rule), and more messages.
TEST(CpuBackend, ZeroSequenceParallelAndPipelineSchedulesRunToo) {
  const int n = world_size();
  if (n != 4) GTEST_SKIP() << "needs 4 ranks";
  struct Case {
    std::string what;
    Layout layout;
  };
  std::vector<Case> cases;
  Layout l;
  l.micro_batch = 1;
  l.bucket_bytes = 16 * KiB;
  l.dp = 2, l.tp = 2, l.pp = 1, l.global_batch = 4, l.zero_stage = 3, l.sequence_parallel = true;
  cases.push_back({"zero3 sp dp=2 tp=2", l});
  Layout hybrid = l;
  hybrid.dp = 4, hybrid.tp = 1, hybrid.global_batch = 8, hybrid.sequence_parallel = false, hybrid.zero_shard_ranks = 2;
  cases.push_back({"zero3 dp=4 hybrid-sharded in groups of 2", hybrid});
  l.zero_stage = 1, l.sequence_parallel = false;
  cases.push_back({"zero1 dp=2 tp=2", l});
  l.overlap_param_gather = true;
  cases.push_back({"zero1 dp=2 tp=2, parameter gathers ahead of the forward", l});
  l.overlap_param_gather = false;
  l.zero_stage = 0, l.recompute = Recompute::Full, l.distribute_saved_activations = true;
  cases.push_back({"dp=2 tp=2 full recompute, checkpoints split over the TP ranks", l});
  l.recompute = Recompute::None, l.distribute_saved_activations = false;
  l.dp = 1, l.tp = 2, l.pp = 2, l.zero_stage = 0, l.schedule = PipelineSchedule::GPipe;
  cases.push_back({"gpipe tp=2 pp=2", l});
  l.dp = 1, l.tp = 1, l.pp = 4, l.schedule = PipelineSchedule::Interleaved1F1B, l.virtual_stages = 2, l.global_batch = 8;
  cases.push_back({"interleaved pp=4 v=2", l});
  // 8 layers + the embedding's and the loss's slots in 2 × 5 one-slot chunks: the first and last empty.
  l.dp = 2, l.pp = 2, l.virtual_stages = 5, l.global_batch = 4, l.embedding_in_split = l.loss_in_split = true;
  cases.push_back({"interleaved pp=2 v=5, embedding and loss in the split", l});
  l = Layout{};
  l.bucket_bytes = 16 * KiB;
  l.tp = 2, l.cp = 2, l.global_batch = 2, l.sequence_parallel = true, l.zero_stage = 1;
  cases.push_back({"cp=2 tp=2 sp zero1", l});
  l.tp = 1, l.pp = 2, l.sequence_parallel = false, l.recompute = Recompute::Full;
  cases.push_back({"cp=2 pp=2 full recompute", l});
  for (const std::string& algorithm : {std::string("native"), std::string("rhd")}) {
    CpuBackendOptions options;
    options.warmup_iters = 0;
    options.collective_algorithm = algorithm;
    CpuBackend backend(options);
    for (const Case& c : cases) {
      const Plan plan = build_plan(gpt_model("tiny8", 8, 64, 4, 32, 128), c.layout, ClusterShape{4, 4});
      const Trace trace = backend.run(plan);
      if (world_rank() == 0) check_trace(plan, trace, algorithm + " " + c.what);
    }
  }
}

// The technique passes' ops run on every layout, with MPI's collectives and with a schedule: one span per
// op, memory back to what lives across iterations, the top-k payloads TGC all-gathers verified float by
// float against each member's re-encoded payload, and its quantised all-reduce (hop by hop) within the
// hops' quantisation error of the exact sum.
TEST(CpuBackend, TechniquePassesOpsRunAndCompressedPayloadsArriveIntact) {
  const int n = world_size();
  const std::vector<std::string> techniques = {
      R"([{"pass": "tgc", "bits": 8, "topk_fraction": 0.1}])",
      R"([{"pass": "tgc", "topk_fraction": 0.05, "error_feedback": false}])",
      R"([{"pass": "tgc", "bits": 4}])",
      R"([{"pass": "tgc", "bits": "adaptive", "adaptive_bits": 8}])",
      R"([{"pass": "lora", "rank": 4}, {"pass": "precision", "policy": "static", "dtype": "fp16"},
          {"pass": "dsa", "density": 0.5, "granularity": "block", "block_size": 16, "mode": "prune"}])",
      R"([{"pass": "dsa", "density": 0.5, "granularity": "nm", "mode": "prune"}, {"pass": "zrdf"}])",
  };
  for (const std::string& algorithm : {std::string("native"), std::string("ring")}) {
    CpuBackendOptions options;
    options.warmup_iters = 1;
    options.collective_algorithm = algorithm;
    CpuBackend backend(options);
    for (const auto& l : layouts(n)) {
      for (const std::string& t : techniques) {
        Plan plan = tiny_plan(std::get<0>(l), std::get<1>(l), std::get<2>(l));
        for (const nlohmann::json& entry : nlohmann::json::parse(t)) parse_technique(entry, "/techniques")->apply(plan);
        const std::string what = algorithm + " " + describe(l) + " " + t;
        const Trace trace = backend.run(plan);
        // Every TGC exchange over dp > 1 is checked: top-k payloads all-gathered float by float, int4 ones
        // reduced hop by hop within the hops' quantisation error of the exact sum.
        const bool exchange = std::get<0>(l) > 1 && t.find("tgc") != std::string::npos;
        EXPECT_EQ(backend.payload_check().wrong, 0) << what;
        EXPECT_EQ(backend.payload_check().floats > 0, exchange) << what;
        if (world_rank() == 0) {
          if (t.find("zrdf") == std::string::npos) check_trace(plan, trace, what);
        } else {
          check_local(plan, trace, world_rank(), what);
        }
      }
    }
  }
}

// Under ZeRO-1 the gradient reduction is a reduce-scatter: TGC's quantised payloads are then reduce-
// scattered hop by hop, and each rank's block of the sum is checked within the R−1 hops' error.
TEST(CpuBackend, AQuantisedReduceScatterDeliversEachRankItsBlockWithinTheHopsError) {
  const int n = world_size();
  Layout l;
  l.dp = n;
  l.micro_batch = 1;
  l.global_batch = 2 * n;
  l.bucket_bytes = 16 * KiB;
  l.zero_stage = 1;
  Plan plan = build_plan(tiny(), l, ClusterShape{n, n});
  parse_technique(nlohmann::json::parse(R"({"pass": "tgc", "bits": 4})"), "/techniques")->apply(plan);
  bool scatters = false;
  for (const PlanOp& op : plan.program(0).ops)
    scatters = scatters || (op.kind == OpKind::Collective && op.collective == CollectiveOp::ReduceScatter);
  EXPECT_TRUE(scatters);
  for (const std::string& algorithm : {std::string("native"), std::string("ring")}) {
    CpuBackendOptions options;
    options.collective_algorithm = algorithm;
    CpuBackend backend(options);
    const Trace trace = backend.run(plan);
    EXPECT_EQ(backend.payload_check().wrong, 0) << algorithm;
    EXPECT_GT(backend.payload_check().floats, 0) << algorithm;
    if (world_rank() == 0) check_trace(plan, trace, algorithm + " zero1 tgc int4");
  }
}

// A planned arena (zrdf) is the rank's memory from the start; the tensors placed in it add nothing.
TEST(CpuBackend, APlannedArenaIsTheMemoryFromTheStart) {
  const int n = world_size();
  Plan plan = tiny_plan(n, 1, 1);
  apply_zrdf(plan, ZrdfParams{});
  const Bytes arena = plan.program(0).arena.size;
  ASSERT_GT(arena, 0);
  CpuBackendOptions options;
  options.warmup_iters = 0;
  const Trace trace = run_plan_on_cpu(plan, options);
  if (world_rank() != 0) return;
  for (int r = 0; r < n; ++r) {
    std::vector<MemorySample> mine;
    for (const MemorySample& m : trace.memory)
      if (m.rank == r) mine.push_back(m);
    ASSERT_FALSE(mine.empty()) << "rank " << r;
    for (const MemorySample& m : mine) EXPECT_EQ(m.bytes, plan.program(r).arena.size) << "rank " << r;
  }
}

// The resident peak, measured by the system rather than taken from the plan: on every rank at least the
// plan's peak (every tensor is allocated and touched for real), and — without AddressSanitizer, whose
// allocator quarantines freed memory and whose shadow is resident too — not far above it. A model large
// enough (about 100 MiB of model state per rank) that MPI's and Eigen's own buffers are small beside it.
TEST(CpuBackend, TheResidentPeakCoversThePlansTensors) {
  const int n = world_size();
  Layout l;
  l.dp = n;
  l.micro_batch = 1;
  l.global_batch = n;
  const Plan plan = build_plan(gpt_model("resident", 2, 512, 8, 64, 512), l, ClusterShape{n, n});
  CpuBackendOptions options;
  options.compute_scale = 0.05;
  const Trace trace = run_plan_on_cpu(plan, options);
  if (world_rank() != 0) return;
  if (trace.resident_peak.empty()) GTEST_SKIP() << "the system's resident set cannot be measured here";
  ASSERT_EQ(trace.resident_peak.size(), static_cast<std::size_t>(n));
  for (int r = 0; r < n; ++r) {
    Bytes planned = 0;
    for (const MemorySample& m : trace.memory)
      if (m.rank == r) planned = std::max(planned, m.bytes);
    ASSERT_GT(planned, 64 * MiB) << "rank " << r;
    const Bytes resident = trace.resident_peak[static_cast<std::size_t>(r)];
    EXPECT_GE(resident, planned * 9 / 10) << "rank " << r;
#if !defined(__SANITIZE_ADDRESS__)
    EXPECT_LE(resident, planned * 6 / 5 + 16 * MiB) << "rank " << r;
#endif
  }
}

// Backends are found by name: "real-cpu" makes a CpuBackend with the experiment's collective algorithm
// ("real-cuda", registered beside it, is tested in test_cuda_backend.cpp).
TEST(CpuBackend, IsTheBackendNamedRealCpu) {
  BackendRegistry registry("backend");
  add_real_backends(registry);
  EXPECT_EQ(registry.names(), (std::vector<std::string>{"real-cpu", "real-cuda"}));
  Experiment e;
  EXPECT_EQ(cpu_backend_options(e).collective_algorithm, "native");  // "auto": MPI's own
  e.simulation.collective_algorithm = "ring";
  EXPECT_EQ(cpu_backend_options(e).collective_algorithm, "ring");
  const int n = world_size();
  const Plan plan = tiny_plan(n, 1, 1);
  const std::unique_ptr<Backend> backend = registry.get("real-cpu")(BackendSetup{&e, nullptr});
  EXPECT_EQ(backend->name(), "real-cpu");
  const Trace trace = backend->run(plan);
  if (world_rank() == 0) check_trace(plan, trace, "registry ring");
}

TEST(CpuBackend, ComputeScaleShrinksTheFlopsRecorded) {
  const int n = world_size();
  const Plan plan = tiny_plan(n, 1, 1);
  CpuBackendOptions full;
  full.warmup_iters = 0;
  CpuBackendOptions half = full;
  half.compute_scale = 0.5;
  const Trace a = run_plan_on_cpu(plan, full);
  const Trace b = run_plan_on_cpu(plan, half);
  double fa = 0, fb = 0;
  for (const Span& s : a.spans) fa += s.flops;
  for (const Span& s : b.spans) fb += s.flops;
  EXPECT_GT(fa, 0);
  EXPECT_LT(fb, 0.75 * fa);
  EXPECT_GT(fb, 0.25 * fa);
}

TEST(CpuBackend, AWorldSizeMismatchThrowsOnEveryRankNamingBoth) {
  const int n = world_size();
  const int other = n == 2 ? 4 : 2;
  const Plan plan = tiny_plan(other, 1, 1);
  CpuBackend backend;
  try {
    backend.run(plan);
    ADD_FAILURE() << "no exception";
  } catch (const InvalidArgument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(std::to_string(other) + " ranks"), std::string::npos) << msg;
    EXPECT_NE(msg.find("has " + std::to_string(n)), std::string::npos) << msg;
  }
}

TEST(CpuBackend, ATooSmallMemoryBudgetThrowsOnEveryRankBeforeRunning) {
  CpuBackendOptions options;
  options.memory_budget = 1024;
  const Plan plan = tiny_plan(world_size(), 1, 1);
  try {
    run_plan_on_cpu(plan, options);
    ADD_FAILURE() << "no exception";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("smaller model"), std::string::npos) << e.what();
  }
}

TEST(CpuBackend, BadOptionsAreRejected) {
  CpuBackendOptions options;
  options.collective_algorithm = "no-such-algorithm";
  EXPECT_THROW(CpuBackend{options}, UnknownName);
  options = {};
  options.compute_scale = 0;
  EXPECT_THROW(CpuBackend{options}, InvalidArgument);
  options = {};
  options.warmup_iters = -1;
  EXPECT_THROW(validate(options), InvalidArgument);
}

}  // namespace
}  // namespace twinbed::real

namespace twinbed::real {

// The simulator's cache model of a CPU rank (sim/cache_residency.hpp) reads core's cpu_pool_footprint as
// what the backend's compute pool touches for an op: the same floats scale_compute gives the op to run.
TEST(CpuCompute, ThePoolFootprintIsWhatTheOpRunsOn) {
  const OpCost gemm = matmul_cost("gemm", OpCost::Kind::Gemm, OpCost::Phase::Forward, 96, 40, 72, 1, DType::FP32);
  const OpCost attention =
      matmul_cost("scores", OpCost::Kind::Attention, OpCost::Phase::Forward, 64, 64, 16, 8, DType::FP32);
  OpCost stream;
  stream.name = "gelu";
  stream.bytes = 1 << 20;
  for (const OpCost& c : {gemm, attention, stream}) {
    const detail::ScaledCompute s = detail::scale_compute(c, 1.0);
    const PoolFootprint f = cpu_pool_footprint(c);
    EXPECT_EQ(f.input_floats, s.input_floats()) << c.name;
    EXPECT_EQ(f.output_floats, s.output_floats()) << c.name;
    EXPECT_GT(f.input_floats, 0) << c.name;
  }
}

// The pool can be emptied from the caches on x86 (calibrate's cache half-life needs it), and still runs.
TEST(CpuCompute, ThePoolEvictsItselfFromTheCachesOnX86) {
  detail::ComputePool pool(1024, 1024);
  detail::ScaledCompute op;
  op.stream_floats = 1024;
#if defined(__x86_64__)
  EXPECT_TRUE(pool.evict_from_caches());
#else
  pool.evict_from_caches();
#endif
  pool.run(op);
}

}  // namespace twinbed::real
