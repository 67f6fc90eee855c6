// The CUDA backend. Without a GPU (or without CUDA in the build) every test that needs one skips with
// the runtime's reason, and the availability tests check that each entry point says so with an
// Unavailable in one line instead of crashing. With one GPU, a 1-rank NCCL communicator runs every
// registered algorithm x op and NCCL's own collectives: the schedules have zero rounds on one rank, but
// the crafted data still goes to the device, comes back and is checked (#wrong = 0).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <optional>
#include <string>
#include <vector>

#include "twinbed/core/collective_algorithms.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/real/collectives.hpp"
#include "twinbed/real/cuda_collectives.hpp"
#include "twinbed/real/hardware.hpp"

namespace twinbed::real {
namespace {

// The checked iteration plus one timed one.
const MeasureOptions kOnce{0, 1, true};

#define SKIP_WITHOUT_GPU()                                                  \
  do {                                                                      \
    if (const std::optional<std::string> why = cuda_unavailable_reason())  \
      GTEST_SKIP() << *why;                                                 \
  } while (0)

#define SKIP_WITHOUT_NCCL_GPU()                                             \
  do {                                                                      \
    if (const std::optional<std::string> why = nccl_unavailable_reason())  \
      GTEST_SKIP() << *why;                                                 \
  } while (0)

bool per_rank_blocks(CollectiveOp op) {
  return op == CollectiveOp::ReduceScatter || op == CollectiveOp::AllGather || op == CollectiveOp::AllToAll;
}

// One rank: every multiple of 4 is allowed; the largest crosses 2 MiB so pipelined schedules cut chunks.
std::vector<Bytes> sizes_for(CollectiveOp op) {
  if (per_rank_blocks(op)) return {0, 4, 4 * 37, MiB + 4};
  return {0, 4, 1028, 2 * MiB + 12};
}

void expect_all_right(const std::vector<CollectiveRow>& rows, const std::vector<Bytes>& sizes, const std::string& what) {
  ASSERT_EQ(rows.size(), sizes.size()) << what;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i].size_bytes, sizes[i]) << what;
    ASSERT_TRUE(rows[i].wrong.has_value()) << what;
    EXPECT_EQ(*rows[i].wrong, 0) << what << " bytes=" << sizes[i];
    EXPECT_GE(rows[i].time_us, 0) << what;  // zero rounds on one rank may time as 0
    EXPECT_TRUE(std::isfinite(rows[i].time_us)) << what;
  }
}

bool one_line(const std::string& text) { return !text.empty() && text.find('\n') == std::string::npos; }

// ---- without a GPU ---------------------------------------------------------------------------------

TEST(CudaAvailability, ReasonAgreesWithTheHardwareProbe) {
  const HardwareInfo info = probe_hardware();
  const std::optional<std::string> why = cuda_unavailable_reason();
  EXPECT_EQ(why.has_value(), !info.cuda_built || info.gpus == 0) << (why ? *why : "a GPU is usable");
  if (why) {
    EXPECT_TRUE(one_line(*why)) << *why;
  }
  if (!why && !info.nccl_built) {
    EXPECT_TRUE(nccl_unavailable_reason().has_value());
  }
}

TEST(CudaAvailability, WithoutAGpuEveryEntryPointThrowsUnavailableInOneLine) {
  if (!cuda_unavailable_reason()) GTEST_SKIP() << "a GPU is usable here; this test is for machines without one";
  auto expect_unavailable = [](const auto& call, const std::string& what) {
    try {
      call();
      ADD_FAILURE() << what << " did not throw";
    } catch (const Unavailable& e) {
      EXPECT_TRUE(one_line(e.what())) << what << ": " << e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << what << " threw something other than Unavailable: " << e.what();
    }
  };
  expect_unavailable([] { measure_collectives_cuda(CollectiveOp::AllReduce, "ring", {1024}, 0, 0, kOnce); },
                     "measure_collectives_cuda(ring)");
  expect_unavailable([] { measure_collectives_cuda(CollectiveOp::AllReduce, kNativeAlgorithm, {1024}, 0, 0, kOnce); },
                     "measure_collectives_cuda(native)");
  expect_unavailable([] { time_gemm_cuda(64, 64, 64, DType::BF16, 1); }, "time_gemm_cuda");
  expect_unavailable([] { copy_bandwidth_cuda(MiB, 1); }, "copy_bandwidth_cuda");
  std::vector<float> a(3, 1.0f);
  const std::vector<float> b(3, 2.0f);
  expect_unavailable([&] { add_floats_cuda(a, b); }, "add_floats_cuda");
}

// With NCCL built, argument errors are found before the GPU is looked for, on any machine.
TEST(CudaArguments, AreCheckedBeforeTheGpu) {
  const HardwareInfo info = probe_hardware();
  if (!info.cuda_built || !info.nccl_built) GTEST_SKIP() << "built without CUDA or NCCL: every call is Unavailable";
  EXPECT_THROW(measure_collectives_cuda(CollectiveOp::AllReduce, "no-such-algorithm", {1024}, 0, 0, kOnce),
               UnknownName);
  EXPECT_THROW(measure_collectives_cuda(CollectiveOp::AllReduce, "ring", {1023}, 0, 0, kOnce), InvalidArgument);
  EXPECT_THROW(measure_collectives_cuda(CollectiveOp::Broadcast, kNativeAlgorithm, {1024}, 5, 0, kOnce),
               InvalidArgument);
  CudaMeasureOptions bad_algo;
  bad_algo.nccl_algo = "Spiral";
  EXPECT_THROW(measure_collectives_cuda(CollectiveOp::AllReduce, kNativeAlgorithm, {1024}, 0, 0, bad_algo), UnknownName);
  CudaMeasureOptions algo_for_schedule;
  algo_for_schedule.nccl_algo = "ring";
  EXPECT_THROW(measure_collectives_cuda(CollectiveOp::AllReduce, "ring", {1024}, 0, 0, algo_for_schedule),
               InvalidArgument);
  CudaMeasureOptions no_iters;
  no_iters.iters = 0;
  EXPECT_THROW(measure_collectives_cuda(CollectiveOp::AllReduce, kNativeAlgorithm, {1024}, 0, 0, no_iters),
               InvalidArgument);
  const ExplicitSchedule for_two(CollectiveRequest{CollectiveOp::Broadcast, 2, 64, 0, 0}, "handmade", {Chunk{64, 0}},
                                 {{Transfer{0, 1, 0, false}}});
  EXPECT_THROW(measure_schedule_cuda(for_two, CudaMeasureOptions{}), InvalidArgument);  // this job has one rank
  EXPECT_THROW(time_gemm_cuda(0, 64, 64, DType::FP32, 1), InvalidArgument);
  EXPECT_THROW(time_gemm_cuda(64, 64, 64, DType::FP8, 1), InvalidArgument);
  EXPECT_THROW(time_gemm_cuda(64, 64, 64, DType::FP32, 0), InvalidArgument);
  EXPECT_THROW(copy_bandwidth_cuda(0, 1), InvalidArgument);
}

TEST(CudaArguments, NcclAlgoNamesAreListed) {
  const std::vector<std::string> names = nccl_algo_names();
  EXPECT_NE(std::find(names.begin(), names.end(), "Ring"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "Tree"), names.end());
}

TEST(AddFloats, CpuReferenceAddsAndChecksSizes) {
  std::vector<float> a = {1, 2, 3};
  const std::vector<float> b = {10, 20, 30};
  add_floats_cpu(a, b);
  EXPECT_EQ(a, (std::vector<float>{11, 22, 33}));
  const std::vector<float> shorter = {1};
  EXPECT_THROW(add_floats_cpu(a, shorter), InvalidArgument);
}

// ---- on a GPU --------------------------------------------------------------------------------------

// The executor's reduction kernel against its CPU twin, on awkward sizes (empty, one, not a multiple of
// a warp or a block, more than one grid-stride pass). One fp32 rounding per element on both sides, so
// the results are bit-identical.
TEST(AddFloats, CudaKernelMatchesTheCpuReference) {
  SKIP_WITHOUT_GPU();
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{31}, std::size_t{257}, std::size_t{3'000'017}}) {
    std::vector<float> dst(n);
    std::vector<float> src(n);
    for (std::size_t i = 0; i < n; ++i) {
      dst[i] = static_cast<float>(i % 1000) * 0.37f - 11.0f;
      src[i] = 1.0f / static_cast<float>(i + 1);
    }
    std::vector<float> expected = dst;
    add_floats_cpu(expected, src);
    add_floats_cuda(dst, src);
    EXPECT_EQ(dst, expected) << "n=" << n;
  }
}

TEST(CudaCollectives, OneRankRunsEveryAlgorithmAndOpWithExactlyTheExpectedData) {
  SKIP_WITHOUT_NCCL_GPU();
  const auto registry = collective_algorithms();
  for (const auto& entry : registry.entries()) {
    for (CollectiveOp op : entry.value.ops) {
      const std::vector<int> hosts = entry.name == "hierarchical" ? std::vector<int>{0, 1} : std::vector<int>{0};
      for (int g : hosts) {
        const std::string what = entry.name + " " + to_string(op) + " ranks_per_host=" + std::to_string(g);
        const std::vector<Bytes> sizes = sizes_for(op);
        const std::vector<CollectiveRow> rows = measure_collectives_cuda(op, entry.name, sizes, 0, g, kOnce);
        expect_all_right(rows, sizes, what);
        for (const CollectiveRow& row : rows) EXPECT_EQ(row.algorithm, entry.name) << what;
      }
    }
  }
}

TEST(CudaCollectives, OneRankHandWrittenScheduleIsCheckedToo) {
  SKIP_WITHOUT_NCCL_GPU();
  const ExplicitSchedule empty(CollectiveRequest{CollectiveOp::AllReduce, 1, 4096, 0, 0}, "handmade",
                               {Chunk{1000, 0}, Chunk{3096, 0}}, {});
  const CollectiveRow row = measure_schedule_cuda(empty, CudaMeasureOptions{});
  EXPECT_EQ(row.algorithm, "handmade");
  EXPECT_EQ(row.wrong, std::optional<std::int64_t>(0));
}

TEST(CudaCollectives, OneRankNativeGivesExactlyTheExpectedData) {
  SKIP_WITHOUT_NCCL_GPU();
  for (const std::string& name : collective_op_names()) {
    const CollectiveOp op = parse_collective_op(name);
    const std::vector<Bytes> sizes = sizes_for(op);
    const std::vector<CollectiveRow> rows = measure_collectives_cuda(op, kNativeAlgorithm, sizes, 0, 0, kOnce);
    expect_all_right(rows, sizes, "native " + name);
    for (const CollectiveRow& row : rows) EXPECT_EQ(row.algorithm, kNativeAlgorithm);
  }
}

// NCCL_ALGO reaches NCCL (a choice it can honour for all-reduce) and leaves the environment as it was.
TEST(CudaCollectives, NativeAllReduceHonoursTheNcclAlgorithm) {
  SKIP_WITHOUT_NCCL_GPU();
  const char* before = std::getenv("NCCL_ALGO");
  const std::optional<std::string> saved = before ? std::optional<std::string>(before) : std::nullopt;
  for (const std::string algo : {"Ring", "tree"}) {
    CudaMeasureOptions options;
    static_cast<MeasureOptions&>(options) = kOnce;
    options.nccl_algo = algo;
    const std::vector<Bytes> sizes = {4, 4 * MiB};
    expect_all_right(measure_collectives_cuda(CollectiveOp::AllReduce, kNativeAlgorithm, sizes, 0, 0, options), sizes,
                     "native allreduce NCCL_ALGO=" + algo);
    const char* after = std::getenv("NCCL_ALGO");
    EXPECT_EQ(after ? std::optional<std::string>(after) : std::nullopt, saved);
  }
}

TEST(CudaCollectives, TimedRunsReportAPositiveTime) {
  SKIP_WITHOUT_NCCL_GPU();
  const MeasureOptions options{2, 5, true};
  const std::vector<CollectiveRow> rows =
      measure_collectives_cuda(CollectiveOp::AllReduce, kNativeAlgorithm, {64 * MiB}, 0, 0, options);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].wrong, std::optional<std::int64_t>(0));
  EXPECT_GT(rows[0].time_us, 0);
}

// A 4096^3 GEMM: 137 GFLOP; any GPU of the last decade does it at 1 TFLOP/s or more in fp16/bf16, and
// nothing does 5 PFLOP/s dense.
TEST(CudaGemm, TimesArePositiveAndTheRatesPlausible) {
  SKIP_WITHOUT_GPU();
  for (DType dtype : {DType::FP32, DType::TF32, DType::BF16, DType::FP16}) {
    const std::int64_t m = 4096, n = 4096, k = 4096;
    const double seconds = time_gemm_cuda(m, n, k, dtype, 10);
    ASSERT_GT(seconds, 0) << dtype_name(dtype);
    const double flops = 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k) / seconds;
    EXPECT_GT(flops, dtype == DType::FP32 ? 1e11 : 1e12) << dtype_name(dtype) << ": " << flops / 1e12 << " TFLOP/s";
    EXPECT_LT(flops, 5e15) << dtype_name(dtype) << ": " << flops / 1e12 << " TFLOP/s";
  }
  // An awkward shape works too.
  EXPECT_GT(time_gemm_cuda(1000, 17, 333, DType::BF16, 3), 0);
}

// Between 10 GB/s (any discrete GPU copies faster) and 10 TB/s (faster than any HBM today).
TEST(CudaCopy, BandwidthIsPlausible) {
  SKIP_WITHOUT_GPU();
  const double bytes_per_second = copy_bandwidth_cuda(256 * MiB, 10);
  EXPECT_GT(bytes_per_second, 1e10);
  EXPECT_LT(bytes_per_second, 1e13);
}

}  // namespace
}  // namespace twinbed::real
