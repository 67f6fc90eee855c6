// Our collective schedules executed over MPI point-to-point vs MPI's own collective, measured.
//
//   mpirun -np 4 --oversubscribe build/real/bench_real_collectives [--op allreduce] [--min 1M] [--max 64M]
//          [--iters 10] [--warmup 2] [--repeats 5] [--algorithms ring,rhd,tree,native] [--ranks-per-host 0]
//   build/real/bench_real_collectives --ranks 4 ...     (starts mpirun itself)
//
// The whole sweep runs --repeats times, the algorithms interleaved within each repeat so that a noisy
// machine (other jobs, oversubscribed cores) disturbs them alike; every figure printed is the median
// over repeats of measure_collectives' time (itself the slowest rank's mean over its iterations).
// --iters is the count at the largest size; a size k times smaller runs k times as many iterations
// (at most 400), so that every measurement spans about the same time and a time slice lost to another
// process weighs alike at every size.
// Data is checked in the first repeat. Prints, on rank 0, the nccl-tests-style table of every
// algorithm (with #wrong), then the ratio time(algorithm) / time(native) per size. Exits 1 when any
// run produced wrong data.
#include <algorithm>
#include <cstdio>
#include <exception>
#include <map>
#include <string>
#include <vector>

#include "twinbed/core/collective_table.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/real/collectives.hpp"
#include "twinbed/real/launch.hpp"
#include "twinbed/real/mpi.hpp"

namespace {

struct Args {
  twinbed::CollectiveOp op = twinbed::CollectiveOp::AllReduce;
  twinbed::Bytes min = twinbed::MiB;
  twinbed::Bytes max = 64 * twinbed::MiB;
  int ranks = 0;
  int ranks_per_host = 0;
  int repeats = 5;
  twinbed::real::MeasureOptions options{2, 10, true};
  std::vector<std::string> algorithms = {"ring", "rhd", "tree", "native"};
  bool help = false;
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::size_t begin = 0;
  while (begin <= s.size()) {
    std::size_t end = s.find(',', begin);
    if (end == std::string::npos) end = s.size();
    if (end > begin) out.push_back(s.substr(begin, end - begin));
    begin = end + 1;
  }
  return out;
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      a.help = true;
      return a;
    }
    if (i + 1 >= argc) throw twinbed::ConfigError(flag, "needs a value");
    const std::string value = argv[++i];
    if (flag == "--op") a.op = twinbed::parse_collective_op(value);
    else if (flag == "--min") a.min = twinbed::parse_size(value);
    else if (flag == "--max") a.max = twinbed::parse_size(value);
    else if (flag == "--iters") a.options.iters = std::stoi(value);
    else if (flag == "--warmup") a.options.warmup_iters = std::stoi(value);
    else if (flag == "--repeats") a.repeats = std::stoi(value);
    else if (flag == "--ranks") a.ranks = std::stoi(value);
    else if (flag == "--ranks-per-host") a.ranks_per_host = std::stoi(value);
    else if (flag == "--algorithms") a.algorithms = split(value);
    else throw twinbed::ConfigError(flag, "unknown flag");
  }
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  try {
    args = parse(argc, argv);
    if (args.help) {
      std::printf(
          "bench_real_collectives: our schedules over MPI point-to-point vs MPI's own collective, same run\n"
          "  --op OP              collective (default allreduce)\n"
          "  --min SIZE --max SIZE  size range, doubling (K, M, G suffixes)\n"
          "  --iters N --warmup N timed / untimed iterations per size\n"
          "  --repeats N          whole sweeps, interleaved by algorithm; the median is reported\n"
          "  --algorithms a,b     algorithms to run, native included (default ring,rhd,tree,native)\n"
          "  --ranks N            start N ranks under mpirun (else run under mpirun yourself)\n"
          "  --ranks-per-host N   for hierarchical\n");
      return 0;
    }
    if (!twinbed::real::in_mpi_job()) {
      if (args.ranks < 1) throw twinbed::ConfigError("--ranks", "run under mpirun, or give --ranks N to start it");
      return twinbed::real::relaunch_under_mpirun(args.ranks, argc, argv);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_real_collectives: %s\n", e.what());
    return 2;
  }
  twinbed::real::MpiSession mpi(&argc, &argv);
  try {
    std::vector<twinbed::Bytes> sizes;
    for (twinbed::Bytes s = args.min; s <= args.max; s *= 2) sizes.push_back(s);
    // runs[algorithm][repeat][size]
    std::map<std::string, std::vector<std::vector<twinbed::CollectiveRow>>> runs;
    bool wrong = false;
    for (int rep = 0; rep < std::max(1, args.repeats); ++rep) {
      twinbed::real::MeasureOptions options = args.options;
      options.check = rep == 0;
      for (const std::string& algorithm : args.algorithms) {
        std::vector<twinbed::CollectiveRow> rows;
        for (twinbed::Bytes size : sizes) {
          options.iters = static_cast<int>(std::min<twinbed::Bytes>(400, args.options.iters * (args.max / size)));
          auto row = twinbed::real::measure_collectives(args.op, algorithm, {size}, 0, args.ranks_per_host, options);
          wrong = wrong || row.at(0).wrong.value_or(0) != 0;
          rows.push_back(row.at(0));
        }
        runs[algorithm].push_back(std::move(rows));
      }
    }
    // The median repeat's row per size, keeping the first repeat's #wrong.
    std::map<std::string, std::vector<twinbed::CollectiveRow>> results;
    for (const auto& [algorithm, reps] : runs) {
      std::vector<twinbed::CollectiveRow> rows;
      for (std::size_t i = 0; i < sizes.size(); ++i) {
        std::vector<twinbed::CollectiveRow> of_size;
        for (const auto& rep : reps) of_size.push_back(rep[i]);
        std::sort(of_size.begin(), of_size.end(), [](const auto& a, const auto& b) { return a.time_us < b.time_us; });
        twinbed::CollectiveRow median = of_size[of_size.size() / 2];
        median.wrong = reps[0][i].wrong;
        rows.push_back(median);
      }
      if (mpi.rank() == 0)
        std::printf("# %s %s on %d ranks (median of %zu repeats)\n%s\n", twinbed::to_string(args.op).c_str(),
                    algorithm.c_str(), mpi.size(), reps.size(), twinbed::format_collective_table(rows).c_str());
      results[algorithm] = std::move(rows);
    }
    if (mpi.rank() == 0 && results.contains(twinbed::real::kNativeAlgorithm)) {
      const auto& native = results.at(twinbed::real::kNativeAlgorithm);
      std::printf("# time(algorithm) / time(native), %d ranks\n%14s", mpi.size(), "size(B)");
      for (const auto& [name, rows] : results)
        if (name != twinbed::real::kNativeAlgorithm) std::printf(" %10s", name.c_str());
      std::printf("\n");
      for (std::size_t i = 0; i < sizes.size(); ++i) {
        std::printf("%14lld", static_cast<long long>(sizes[i]));
        for (const auto& [name, rows] : results)
          if (name != twinbed::real::kNativeAlgorithm) std::printf(" %10.2f", rows[i].time_us / native[i].time_us);
        std::printf("\n");
      }
    }
    return wrong ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_real_collectives (rank %d): %s\n", mpi.rank(), e.what());
    mpi.abort_job(2);  // peers may be waiting in a collective
  }
}
