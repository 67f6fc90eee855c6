// twinbed calibrate: measure this machine (GEMMs, memory bandwidth, point-to-point link, the technique
// kernels and sparse GEMMs) with CPU ranks over MPI, or its GPU with --gpu (cuBLAS, copies, NCCL), and
// write the profile the simulator reads (`collectives --profile`, `compare`, `validate --profile`, an
// experiment's cluster "profile").
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>

#include "commands.hpp"
#include "run_experiment.hpp"
#include "validators.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/real/calibrate.hpp"
#include "twinbed/real/calibrate_cuda.hpp"
#include "twinbed/real/launch.hpp"
#include "twinbed/real/mpi.hpp"

namespace twinbed::cli {

namespace {

struct CalibrateCliOptions {
  int ranks = 2;
  std::string out = "profiles/this-machine.json";
  bool quick = false;
  bool gpu = false;
};

// --gpu: this machine's GPU (calibrate_cuda.hpp). One GPU is a process alone; two (for the NCCL link)
// run under mpirun, each rank on its own GPU, and rank 0 writes.
int run_calibrate_gpu(const CalibrateCliOptions& o, Invocation& invocation) {
  std::optional<real::MpiSession> mpi;
  if (o.ranks > 1) {
    if (!real::in_mpi_job()) {
      if (!real::mpi_built()) throw Unavailable("calibrate --gpu --ranks N > 1 needs MPI: install libopenmpi-dev openmpi-bin and rebuild");
      return real::relaunch_under_mpirun(o.ranks, invocation.argc, invocation.argv);
    }
    mpi.emplace();
  }
  real::CudaCalibrateOptions options;
  options.ranks = mpi ? mpi->size() : 1;
  if (o.quick) {
    options.gemm_dims = {512, 2048};
    options.copy_bytes = {4 * MiB, 256 * MiB};
    options.link_sizes = {8, MiB, 16 * MiB};
  }
  if (!mpi || mpi->rank() == 0) std::fprintf(stderr, "calibrating the GPU (cuBLAS GEMM grid x 4 dtypes, copies%s)...\n",
                                             options.ranks == 2 ? ", NCCL link" : "");
  MachineProfile p = real::calibrate_cuda(options);
  if (mpi && mpi->rank() != 0) return 0;
  p.provenance->git_revision = git_revision();
  p.provenance->tool = "twinbed calibrate --gpu";
  save_profile(p, o.out);
  std::printf("# profile of %s written to %s\n", p.device.c_str(), o.out.c_str());
  for (const auto& [dtype, rate] : p.gemm_rate)
    std::printf("best %-5s GEMM  %10.1f TFLOP/s\n", dtype_name(dtype).c_str(), rate / 1e12);
  std::printf("memory (copy)    %10.1f GB/s, read + written\n", p.memory_bandwidth / GBps);
  std::printf("tiny GEMM        %10.2f us\n", p.launch_overhead.microseconds());
  if (p.link) {
    std::printf("link (NCCL)      %10.2f us + bytes / %.2f GB/s\n", p.link->latency.microseconds(), p.link->bandwidth / GBps);
  } else {
    std::printf("link             not measured (one GPU; --ranks 2 on two GPUs measures it)\n");
  }
  return 0;
}

int run_calibrate(const CalibrateCliOptions& o, Invocation& invocation) {
  if (o.gpu) return run_calibrate_gpu(o, invocation);
  if (!real::in_mpi_job()) {
    if (!real::mpi_built()) throw Unavailable("calibrate needs MPI: install libopenmpi-dev openmpi-bin and rebuild");
    return real::relaunch_under_mpirun(o.ranks, invocation.argc, invocation.argv);
  }
  real::MpiSession mpi;
  real::CalibrateOptions options;
  if (o.quick) {
    options.gemm_dims = {128, 512};
    options.seconds_per_point = 0.01;
    options.stream_bytes = {64 * KiB, 8 * MiB};
    options.p2p_sizes = {8, 64 * KiB, MiB, 4 * MiB};
    options.kernel_elements = 1 << 18;
    options.sparse_gemm_dim = 256;
  }
  try {
    if (mpi.rank() == 0) std::fprintf(stderr, "calibrating on %d ranks (GEMM grid, streaming, technique kernels, ping-pong)...\n", mpi.size());
    // The speed probe (profile.hpp's speed_probe_sample) timed before the grid and after the whole
    // calibration too: a machine whose speed moves while it is measured gives a profile of two states.
    const std::int64_t probe = speed_probe_dim(options.gemm_dims);
    const auto time_probe = [&] { return real::measure_gemm_rate(mpi, probe, probe, probe, options.seconds_per_point); };
    const FlopsPerSec probe_before = probe > 0 ? time_probe() : 0;
    MachineProfile p = real::calibrate_cpu(mpi, options);
    const FlopsPerSec probe_after = probe > 0 ? time_probe() : 0;
    if (mpi.rank() == 0) {
      save_profile(p, o.out);
      std::printf("# profile of %s written to %s\n", p.provenance->machine.c_str(), o.out.c_str());
      std::printf("best fp32 GEMM   %10.2f GFLOP/s per rank (%zu shapes)\n", p.gemm_rate.at(DType::FP32) / 1e9,
                  p.gemm_samples.size() / p.gemm_rate.size());
      std::printf("memory (y=ax+b)  %10.2f GB/s per rank\n", p.memory_bandwidth / GBps);
      std::printf("tiny op          %10.2f us\n", p.launch_overhead.microseconds());
      if (p.cache_half_life > Time{})
        std::printf("cache half-life  %10.2f ms (data a rank leaves in cache: half read from memory again after this)\n",
                    p.cache_half_life.seconds() * 1e3);
      else
        std::printf("cache half-life  none seen (data a rank leaves in cache stayed there)\n");
      for (const auto& [key, seconds] : p.kernel_seconds_per_element)
        std::printf("%-32s %8.2f ns per element\n", key.c_str(), seconds * 1e9);
      for (const auto& [key, rate] : p.sparse_gemm_rate)
        std::printf("sparse GEMM %-20s %8.2f GFLOP/s of the non-zero work\n", key.c_str(), rate / 1e9);
      if (p.link) {
        std::printf("link             %10.2f us + bytes / %.2f GB/s\n", p.link->latency.microseconds(),
                    p.link->bandwidth / GBps);
      }
      if (const auto sample = speed_probe_sample(p); sample && probe_before > 0) {
        std::printf("machine speed    %lld^3 GEMM %.2f GFLOP/s per rank before the grid, %.2f in it, %.2f at the end\n",
                    static_cast<long long>(probe), probe_before / 1e9, sample->rate / 1e9, probe_after / 1e9);
        const double lo = std::min({probe_before, sample->rate, probe_after});
        const double hi = std::max({probe_before, sample->rate, probe_after});
        if (hi > (1 + kSpeedDriftTolerance) * lo)
          std::fprintf(stderr, "twinbed: warning: this machine's speed moved by %.0f %% while it was calibrated; the profile "
                       "mixes its states: calibrate again on a quiet machine\n", 100 * (hi / lo - 1));
      }
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "twinbed: error on rank %d: %s\n", mpi.rank(), e.what());
    mpi.abort_job(1);
  }
}

}  // namespace

void add_calibrate_command(CLI::App& app, Invocation& invocation) {
  auto opts = std::make_shared<CalibrateCliOptions>();
  CLI::App* cmd = app.add_subcommand(
      "calibrate",
      "Measure this machine with CPU ranks over MPI (GEMM grid, memory bandwidth, how fast its caches lose data, technique kernels, sparse GEMMs, point-to-point link) and write "
      "the profile the simulator reads; warns when the machine's speed moved while it measured");
  cmd->add_option("--ranks", opts->ranks,
                  "Ranks measuring at once (relaunches under mpirun unless already started by mpirun/srun)")
      ->transform(in_range(1, kMaxCount, true))
      ->capture_default_str();
  cmd->add_option("--out", opts->out, "Profile file to write (JSON; folders are created)")
      ->capture_default_str()
      ->check([](const std::string& path) {  // before the measuring, not at its end
        return std::filesystem::is_directory(path) ? "'" + path + "' is a folder: give the profile a file, e.g. " +
                                                         (std::filesystem::path(path) / "profile.json").string()
                                                   : std::string();
      });
  cmd->add_flag("--gpu", opts->gpu,
                "Measure this machine's GPU instead (cuBLAS GEMMs by shape and dtype, copy bandwidth, and with --ranks 2 "
                "the NCCL link); --ranks defaults to 1 GPU then, without mpirun");
  cmd->add_flag("--quick", opts->quick, "A second or two instead of about half a minute: fewer shapes, shorter timings");
  cmd->callback([opts, cmd, &invocation] {
    if (opts->gpu && cmd->count("--ranks") == 0) opts->ranks = 1;  // one GPU, no mpirun
    invocation.exit_code = run_calibrate(*opts, invocation);
  });
}

}  // namespace twinbed::cli
