// report() on hand-made traces whose figures are worked out by hand (the three-way split of each
// rank's step, MFU arithmetic, memory fit, stand-in ranks), and the exporters: CSV, results JSON, a
// Chrome trace checked against the Trace Event Format's required fields, and atomic writes.
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "twinbed/core/error.hpp"
#include "twinbed/core/export.hpp"
#include "twinbed/core/report.hpp"

namespace twinbed {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

Span span(int rank, StreamKind stream, SpanKind kind, std::uint32_t name, double start_us, double end_us) {
  Span s;
  s.rank = rank;
  s.stream = stream;
  s.kind = kind;
  s.name = name;
  s.start = Time::us(start_us);
  s.end = Time::us(end_us);
  return s;
}

// Two ranks, a 10 us step.
//   rank 0: compute [0,4) gemm, [6,8) attention; collective [3,5)
//           -> compute 6, exposed comm 1 ([4,5)), bubble 3 ([5,6) and [8,10))
//   rank 1: p2p [0,3); compute [2,10) gemm
//           -> compute 8, exposed comm 2 ([0,2)), bubble 0
Trace two_rank_trace() {
  Trace t;
  t.backend = "sim";
  t.world_size = 2;
  t.names = {"fc1_fwd", "attn \"core\"", "tp.allreduce", "pp.recv"};
  t.spans = {span(0, StreamKind::Compute, SpanKind::Gemm, 0, 0, 4),
             span(0, StreamKind::Collective, SpanKind::Collective, 2, 3, 5),
             span(0, StreamKind::Compute, SpanKind::Attention, 1, 6, 8),
             span(1, StreamKind::P2P, SpanKind::SendRecv, 3, 0, 3),
             span(1, StreamKind::Compute, SpanKind::Gemm, 0, 2, 10)};
  t.spans[0].flops = 4e9;
  t.spans[1].bytes = 1 << 20;
  t.spans[0].micro_batch = 0;
  t.memory = {{0, Time::us(0), 10 * GiB}, {0, Time::us(1), 50 * GiB}, {0, Time::us(9), 20 * GiB},
              {1, Time::us(0), 90 * GiB}};
  t.step_time = Time::us(10);
  return t;
}

ReportInputs inputs() {
  ReportInputs in;
  in.model_flops = 6e9;    // 6e9 FLOP in 10 us on 2 GPUs = 300 TFLOP/s per GPU
  in.executed_flops = 4e9;
  in.tokens = 1000;
  in.peak_flops = 1e15;
  in.device_memory = 80 * GiB;
  return in;
}

TEST(Report, ThreeWaySplitOfTheStep) {
  const Report r = report(two_rank_trace(), inputs());
  ASSERT_EQ(r.ranks.size(), 2u);
  EXPECT_EQ(r.ranks[0].compute, Time::us(6));
  EXPECT_EQ(r.ranks[0].exposed_communication, Time::us(1));
  EXPECT_EQ(r.ranks[0].bubble, Time::us(3));
  EXPECT_EQ(r.ranks[0].communication, Time::us(2));
  EXPECT_EQ(r.ranks[1].compute, Time::us(8));
  EXPECT_EQ(r.ranks[1].exposed_communication, Time::us(2));
  EXPECT_EQ(r.ranks[1].bubble, Time::us(0));
  EXPECT_DOUBLE_EQ(r.compute_fraction, 14.0 / 20);
  EXPECT_DOUBLE_EQ(r.exposed_comm_fraction, 3.0 / 20);
  EXPECT_DOUBLE_EQ(r.bubble_fraction, 3.0 / 20);
  EXPECT_DOUBLE_EQ(r.compute_fraction + r.exposed_comm_fraction + r.bubble_fraction, 1.0);
}

TEST(Report, CommunicationOnTheComputeStreamIsStillCommunication) {
  // Megatron issues tensor-parallel all-reduces on the compute stream: they are exposed communication.
  Trace t;
  t.backend = "sim";
  t.world_size = 1;
  t.names = {"fc1_fwd", "tp_allreduce"};
  t.spans = {span(0, StreamKind::Compute, SpanKind::Gemm, 0, 0, 6), span(0, StreamKind::Compute, SpanKind::Collective, 1, 6, 8)};
  t.step_time = Time::us(10);
  const Report r = report(t, inputs());
  EXPECT_EQ(r.ranks[0].compute, Time::us(6));
  EXPECT_EQ(r.ranks[0].exposed_communication, Time::us(2));
  EXPECT_EQ(r.ranks[0].bubble, Time::us(2));
}

TEST(Report, ThroughputAndMfuArithmetic) {
  const Report r = report(two_rank_trace(), inputs());
  EXPECT_EQ(r.step_time, Time::us(10));
  EXPECT_DOUBLE_EQ(r.tokens_per_s, 1000 / 1e-5);
  EXPECT_NEAR(r.tflops_per_gpu, 300, 1e-9);
  EXPECT_NEAR(r.mfu, 0.3, 1e-12);
  EXPECT_NEAR(r.executed_tflops_per_gpu, 4e9 / 1e-5 / 2 / 1e12, 1e-9);
}

TEST(Report, PeakMemoryAndFit) {
  const Report r = report(two_rank_trace(), inputs());
  EXPECT_TRUE(r.memory_recorded);
  EXPECT_EQ(r.ranks[0].peak_memory, 50 * GiB);
  EXPECT_TRUE(r.ranks[0].fits);
  EXPECT_EQ(r.ranks[1].peak_memory, 90 * GiB);
  EXPECT_FALSE(r.ranks[1].fits);
  EXPECT_EQ(r.peak_memory, 90 * GiB);
  EXPECT_EQ(r.peak_memory_rank, 1);
  EXPECT_FALSE(r.memory_fits);
  EXPECT_FALSE(r.resident_measured);
  EXPECT_EQ(format_summary(r).find("resident peak"), std::string::npos);
}

// A real backend's resident peaks (measured by the system) are reported beside the plan's peak: the
// largest, its rank; one per rank or the trace is broken.
TEST(Report, ResidentPeaksBesideThePlansPeak) {
  Trace t = two_rank_trace();
  t.resident_peak = {70 * GiB, 60 * GiB};
  const Report r = report(t, inputs());
  EXPECT_TRUE(r.resident_measured);
  EXPECT_EQ(r.resident_peak, 70 * GiB);
  EXPECT_EQ(r.resident_peak_rank, 0);
  EXPECT_EQ(r.peak_memory, 90 * GiB);  // the plan's, unchanged
  EXPECT_NE(format_summary(r).find("resident peak"), std::string::npos);
  t.resident_peak = {70 * GiB};
  EXPECT_THROW(report(t, inputs()), InvalidArgument);
}

TEST(Report, OpKindTable) {
  const Report r = report(two_rank_trace(), inputs());
  ASSERT_EQ(r.op_kinds.size(), 4u);  // gemm, attention, collective, sendrecv in SpanKind order
  EXPECT_EQ(r.op_kinds[0].kind, SpanKind::Gemm);
  EXPECT_EQ(r.op_kinds[0].count, 2);
  EXPECT_EQ(r.op_kinds[0].total, Time::us(12));
  EXPECT_EQ(r.op_kinds[0].per_rank, Time::us(6));
  EXPECT_DOUBLE_EQ(r.op_kinds[0].share, 12.0 / 19);
  EXPECT_EQ(r.op_kinds[1].kind, SpanKind::Attention);
  EXPECT_EQ(r.op_kinds[2].kind, SpanKind::Collective);
  EXPECT_EQ(r.op_kinds[2].bytes, 1 << 20);
  EXPECT_EQ(r.op_kinds[3].kind, SpanKind::SendRecv);
  EXPECT_EQ(r.op_kinds[3].total, Time::us(3));
}

// One row per (kind, op name), over ranks and micro-batches, ordered by kind then name; stand-ins count
// as the ranks they stand for, which leaves the mean alone.
TEST(Report, OpTable) {
  const Report r = report(two_rank_trace(), inputs());
  ASSERT_EQ(r.ops.size(), 4u);
  EXPECT_EQ(r.ops[0], (OpRow{"fc1_fwd", SpanKind::Gemm, 2, Time::us(12), 6e-6}));
  EXPECT_EQ(r.ops[1].name, "attn \"core\"");
  EXPECT_EQ(r.ops[1].kind, SpanKind::Attention);
  EXPECT_EQ(r.ops[2].name, "tp.allreduce");
  EXPECT_EQ(r.ops[3], (OpRow{"pp.recv", SpanKind::SendRecv, 1, Time::us(3), 3e-6}));
  Trace t = two_rank_trace();
  t.world_size = 4;
  t.recorded_rank = {0, 1, 0, 1};
  const Report w = report(t, inputs());
  EXPECT_EQ(w.ops[0].count, 4);
  EXPECT_EQ(w.ops[0].total, Time::us(24));
  EXPECT_DOUBLE_EQ(w.ops[0].mean_s, 6e-6);
  t.names.clear();  // unnamed ops are named by their index
  EXPECT_EQ(report(t, inputs()).ops[0].name, "op 0");
}

TEST(Report, StandInRanksCountAsTheRanksTheyStandFor) {
  Trace t = two_rank_trace();
  t.world_size = 4;
  t.recorded_rank = {0, 1, 0, 1};
  t.memory.push_back({3, Time::us(0), 1});  // a stand-in has no samples of its own...
  EXPECT_THROW(report(t, inputs()), InvalidArgument);
  t.memory.pop_back();
  const Report r = report(t, inputs());
  const Report two = report(two_rank_trace(), inputs());
  ASSERT_EQ(r.ranks.size(), 4u);
  EXPECT_EQ(r.ranks[2].rank, 2);
  EXPECT_EQ(r.ranks[2].recorded_as, 0);
  EXPECT_EQ(r.ranks[2].compute, r.ranks[0].compute);
  EXPECT_EQ(r.ranks[3].bubble, r.ranks[1].bubble);
  EXPECT_DOUBLE_EQ(r.bubble_fraction, two.bubble_fraction);
  EXPECT_EQ(r.op_kinds[0].count, 4);
  EXPECT_EQ(r.op_kinds[0].per_rank, two.op_kinds[0].per_rank);
  EXPECT_NEAR(r.tflops_per_gpu, two.tflops_per_gpu / 2, 1e-9);  // same FLOPs, twice the GPUs
}

TEST(Report, FreeCommunicationPipelineBubble) {
  // A 1F1B-like picture with p = 2 stages and m = 2 micro-batches, forward 1, backward 2 time units,
  // no communication: stage 0 F0 F1 . B0 . B1 ; stage 1 . F0 B0 F1 B1. Step = (m + p − 1)(f + b) = 9.
  Trace t;
  t.backend = "sim";
  t.world_size = 2;
  t.names = {"f", "b"};
  t.spans = {span(0, StreamKind::Compute, SpanKind::Gemm, 0, 0, 1), span(0, StreamKind::Compute, SpanKind::Gemm, 0, 1, 2),
             span(0, StreamKind::Compute, SpanKind::Gemm, 1, 4, 6), span(0, StreamKind::Compute, SpanKind::Gemm, 1, 7, 9),
             span(1, StreamKind::Compute, SpanKind::Gemm, 0, 1, 2), span(1, StreamKind::Compute, SpanKind::Gemm, 1, 2, 4),
             span(1, StreamKind::Compute, SpanKind::Gemm, 0, 4, 5), span(1, StreamKind::Compute, SpanKind::Gemm, 1, 5, 7)};
  t.step_time = Time::us(9);
  const Report r = report(t, inputs());
  EXPECT_DOUBLE_EQ(r.bubble_fraction, 1.0 / 3);  // (p − 1)/(m + p − 1)
  EXPECT_DOUBLE_EQ(r.exposed_comm_fraction, 0);
}

TEST(Report, RejectsBrokenTraces) {
  Trace t = two_rank_trace();
  t.spans[0].rank = 5;
  EXPECT_THROW(report(t, inputs()), InvalidArgument);
  t = two_rank_trace();
  t.spans[0].end = Time::us(-1);
  EXPECT_THROW(report(t, inputs()), InvalidArgument);
  t = Trace{};
  t.world_size = 1;
  EXPECT_THROW(report(t, inputs()), InvalidArgument);  // no step
  t.world_size = 0;
  EXPECT_THROW(report(t, inputs()), InvalidArgument);
}

TEST(Report, SummaryMentionsTheHeadlineFigures) {
  const std::string s = format_summary(report(two_rank_trace(), inputs()));
  for (const char* needle : {"step time", "tokens/s", "TFLOP/s", "MFU 30.0%", "bubble 15.0%", "exposed communication 15.0%",
                             "DOES NOT FIT", "gemm"}) {
    EXPECT_NE(s.find(needle), std::string::npos) << needle << " missing from:\n" << s;
  }
}

// ---- exporters -----------------------------------------------------------------------------------

TEST(Export, CsvTablesAndQuoting) {
  const Report r = report(two_rank_trace(), inputs());
  const auto kinds = parse_csv(op_kinds_csv(r));
  ASSERT_EQ(kinds.size(), 5u);
  EXPECT_EQ(kinds[0], (std::vector<std::string>{"kind", "count", "total_s", "per_rank_s", "share", "flops", "bytes"}));
  EXPECT_EQ(kinds[1][0], "gemm");
  EXPECT_DOUBLE_EQ(std::stod(kinds[1][2]), 12e-6);
  const auto ranks = parse_csv(ranks_csv(r));
  ASSERT_EQ(ranks.size(), 3u);
  EXPECT_EQ(ranks[2][0], "1");
  EXPECT_EQ(ranks[2][7], "false");
  for (const auto& row : ranks) EXPECT_EQ(row.size(), ranks[0].size());

  const std::string awkward = "a,\"b\"\nc";
  EXPECT_EQ(csv_field("plain"), "plain");
  const auto parsed = parse_csv(csv_field(awkward) + "," + csv_field("x") + "\n1,2\n");
  ASSERT_EQ(parsed.size(), 2u);
  EXPECT_EQ(parsed[0], (std::vector<std::string>{awkward, "x"}));
  EXPECT_EQ(parsed[1], (std::vector<std::string>{"1", "2"}));
  EXPECT_THROW(parse_csv("\"open"), InvalidArgument);
}

TEST(Export, ResultsJsonCarriesReportAndProvenance) {
  const Report r = report(two_rank_trace(), inputs());
  const RunProvenance p = make_provenance(json{{"name", "x"}}, "abc123", "0.1.0");
  EXPECT_EQ(p.date.size(), 20u);  // 2025-01-31T12:00:00Z
  EXPECT_FALSE(p.hostname.empty());
  const json j = json::parse(results_json(r, p).dump());
  EXPECT_EQ(j["format"], "twinbed-results-1");
  EXPECT_EQ(j["backend"], "sim");
  EXPECT_DOUBLE_EQ(j["summary"]["step_time_s"].get<double>(), 1e-5);
  EXPECT_NEAR(j["summary"]["mfu_pct"].get<double>(), 30, 1e-9);
  EXPECT_EQ(j["summary"]["memory_fits"], false);
  EXPECT_EQ(j["op_kinds"].size(), 4u);
  EXPECT_EQ(j["ranks"].size(), 2u);
  EXPECT_EQ(j["provenance"]["git_revision"], "abc123");
  EXPECT_EQ(j["provenance"]["config"]["name"], "x");
}

// The Trace Event Format's required fields and types (the JSON object form), as Perfetto and
// chrome://tracing read it.
void check_trace_event_format(const json& doc) {
  ASSERT_TRUE(doc.is_object());
  ASSERT_TRUE(doc.contains("traceEvents"));
  ASSERT_TRUE(doc["traceEvents"].is_array());
  const std::set<std::string> phases = {"B", "E", "X", "i", "I", "C", "M", "b", "e", "n", "s", "t", "f", "P", "N", "O", "D"};
  for (const json& e : doc["traceEvents"]) {
    ASSERT_TRUE(e.is_object()) << e.dump();
    ASSERT_TRUE(e.contains("name") && e["name"].is_string()) << e.dump();
    ASSERT_TRUE(e.contains("ph") && e["ph"].is_string() && phases.count(e["ph"].get<std::string>())) << e.dump();
    ASSERT_TRUE(e.contains("pid") && e["pid"].is_number_integer()) << e.dump();
    ASSERT_TRUE(e.contains("tid") && e["tid"].is_number_integer()) << e.dump();
    ASSERT_TRUE(e.contains("ts") && e["ts"].is_number()) << e.dump();
    const std::string ph = e["ph"];
    if (ph == "X") {
      ASSERT_TRUE(e.contains("dur") && e["dur"].is_number() && e["dur"].get<double>() >= 0) << e.dump();
    }
    if (ph == "M" || ph == "C") {
      ASSERT_TRUE(e.contains("args") && e["args"].is_object()) << e.dump();
    }
    if (ph == "C") {
      for (const auto& [k, v] : e["args"].items()) ASSERT_TRUE(v.is_number()) << e.dump();
    }
  }
}

TEST(Export, ChromeTraceFollowsTheTraceEventFormat) {
  const Trace sim = two_rank_trace();
  Trace real = two_rank_trace();
  real.backend = "real";
  std::ostringstream out;
  write_chrome_trace(out, {&sim, &real});
  const json doc = json::parse(out.str());  // throws (fails the test) when not valid JSON
  check_trace_event_format(doc);

  int complete = 0, counters = 0;
  std::set<std::string> process_names, thread_names;
  for (const json& e : doc["traceEvents"]) {
    if (e["ph"] == "X") ++complete;
    if (e["ph"] == "C") ++counters;
    if (e["name"] == "process_name") process_names.insert(e["args"]["name"].get<std::string>());
    if (e["name"] == "thread_name") thread_names.insert(e["args"]["name"].get<std::string>());
  }
  EXPECT_EQ(complete, 10);
  EXPECT_EQ(counters, 8);
  EXPECT_EQ(process_names, (std::set<std::string>{"sim", "real"}));
  EXPECT_TRUE(thread_names.count("rank 0 compute"));
  EXPECT_TRUE(thread_names.count("rank 1 p2p"));
  // Microseconds: the collective on rank 0 starts at 3 us and lasts 2 us, on tid 0·3 + 1.
  bool found = false;
  for (const json& e : doc["traceEvents"]) {
    if (e["ph"] == "X" && e["name"] == "tp.allreduce" && e["pid"] == 0) {
      EXPECT_DOUBLE_EQ(e["ts"].get<double>(), 3.0);
      EXPECT_DOUBLE_EQ(e["dur"].get<double>(), 2.0);
      EXPECT_EQ(e["tid"], 1);
      EXPECT_EQ(e["cat"], "collective");
      found = true;
    }
  }
  EXPECT_TRUE(found);
}

TEST(Export, ChromeTraceNamesStandIns) {
  Trace t = two_rank_trace();
  t.world_size = 4;
  t.recorded_rank = {0, 1, 0, 1};
  std::ostringstream out;
  write_chrome_trace(out, {&t});
  const json doc = json::parse(out.str());
  check_trace_event_format(doc);
  EXPECT_NE(out.str().find("rank 0 compute (stands for 2 ranks)"), std::string::npos);
}

class AtomicWrite : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("twinbed_atomic_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
                                        "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  static std::string read(const fs::path& p) {
    std::ifstream in(p);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  std::size_t files_in_dir() const {
    return static_cast<std::size_t>(std::distance(fs::directory_iterator(dir_), fs::directory_iterator{}));
  }
  fs::path dir_;
};

TEST_F(AtomicWrite, WritesAndCreatesFolders) {
  const fs::path p = dir_ / "a" / "b.json";
  write_file_atomic(p, std::string("{}\n"));
  EXPECT_EQ(read(p), "{}\n");
  write_file_atomic(p, std::string("[]\n"));
  EXPECT_EQ(read(p), "[]\n");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_ / "a"), fs::directory_iterator{}), 1);
}

TEST_F(AtomicWrite, AFailureLeavesNoPartialFile) {
  const fs::path p = dir_ / "results.json";
  const auto failing = [](std::ostream& out) {
    out << "{\"half\": ";
    throw Error("simulated failure midway");
  };
  EXPECT_THROW(write_file_atomic(p, failing), Error);
  EXPECT_FALSE(fs::exists(p));
  EXPECT_EQ(files_in_dir(), 0u);  // no temporary left behind

  write_file_atomic(p, std::string("old"));
  EXPECT_THROW(write_file_atomic(p, failing), Error);
  EXPECT_EQ(read(p), "old");  // the previous content survives
  EXPECT_EQ(files_in_dir(), 1u);
}

TEST_F(AtomicWrite, UnwritableFolderIsAnError) {
  fs::create_directories(dir_);
  write_file_atomic(dir_ / "file", std::string("x"));
  EXPECT_THROW(write_file_atomic(dir_ / "file" / "sub.json", std::string("y")), Error);  // parent is a file
}

}  // namespace
}  // namespace twinbed
