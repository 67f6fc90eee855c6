#include "twinbed/real/calibrate.hpp"

#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <ctime>
#include <limits>

#include <Eigen/Dense>

#include <map>
#include <string>
#include <thread>
#include <vector>

#include "cpu_compute.hpp"
#include "technique_ops.hpp"
#include "twinbed/kernels/dsa.hpp"
#include "twinbed/kernels/sparse_gemm.hpp"
#include "twinbed/core/revision.hpp"
#include "twinbed/kernels/tgc.hpp"
#include "twinbed/real/tgc_codec.hpp"

namespace twinbed::real {

namespace {

// Seconds per call of `body`: after one warm-up call, the median over up to kWindows back-to-back
// windows, each repeating `body` until min_seconds / windows have passed (at least once) and taking its
// elapsed time over its calls. A shared machine's interruptions (another process, a timer) only ever
// lengthen a window, so the median keeps one interrupted window from moving the rate, which a single
// window over the whole time (a mean) does not: two profiles of this 2-core machine, minutes apart,
// read one streaming size at 100 and 130 GB/s that way. Calls longer than a window get fewer windows
// (as many as the warm-up call's time fits in min_seconds, at least one), so the time spent stays
// about min_seconds.
constexpr int kWindows = 5;

template <class Body>
double time_per_call(Body&& body, double min_seconds) {
  const auto warm = std::chrono::steady_clock::now();
  body();
  const double warm_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - warm).count();
  const int windows = warm_seconds > 0 ? std::clamp(static_cast<int>(min_seconds / warm_seconds), 1, kWindows) : kWindows;
  std::array<double, kWindows> per_call{};
  for (int w = 0; w < windows; ++w) {
    int calls = 0;
    const auto start = std::chrono::steady_clock::now();
    double elapsed = 0;
    do {
      body();
      ++calls;
      elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    } while (elapsed < min_seconds / windows);
    per_call[static_cast<std::size_t>(w)] = elapsed / calls;
  }
  std::nth_element(per_call.begin(), per_call.begin() + windows / 2, per_call.begin() + windows);
  return per_call[static_cast<std::size_t>(windows / 2)];
}

// Every rank's value, in rank order, on every rank.
std::vector<double> over_ranks(double mine, int ranks) {
  std::vector<double> all(static_cast<std::size_t>(ranks));
  MPI_CHECK(MPI_Allgather(&mine, 1, MPI_DOUBLE, all.data(), 1, MPI_DOUBLE, MPI_COMM_WORLD));
  return all;
}

double median_of(std::vector<double> all) {
  std::sort(all.begin(), all.end());
  const std::size_t n = all.size();
  return n % 2 ? all[n / 2] : 0.5 * (all[n / 2 - 1] + all[n / 2]);
}

// The median over ranks of one value per rank (every rank gets it).
double median_over_ranks(double mine, int ranks) { return median_of(over_ranks(mine, ranks)); }

double gemm_seconds(std::int64_t m, std::int64_t n, std::int64_t k, double min_seconds) {
  Eigen::MatrixXf a = Eigen::MatrixXf::Constant(m, k, 0.5f);
  Eigen::MatrixXf b = Eigen::MatrixXf::Constant(k, n, 0.25f);
  Eigen::MatrixXf c(m, n);
  return time_per_call([&] { c.noalias() = a * b; }, min_seconds);
}

// The bandwidth of the backend's own memory-bound op (ComputePool: y = a·x + b over one array read and
// one written), counted as the plan's memory-bound costs count bytes: what it reads plus what it writes.
// Not STREAM triad (a = b + s·c), which the profile held before: with write-allocate caches a triad moves
// 4/3 of the bytes it counts and this op 3/2 of them, so a triad rate overstates the op's by about 12%
// (measured here: cpu-tiny's memory-bound ops were simulated 15-18% fast against a triad profile).
double stream_bandwidth(Bytes bytes_per_array, double min_seconds) {
  const std::int64_t n = std::max<Bytes>(bytes_per_array / 4, 1);
  detail::ComputePool pool(n, n);
  detail::ScaledCompute op;
  op.stream_floats = n;
  const double seconds = time_per_call([&] { pool.run(op); }, min_seconds);
  return 2.0 * static_cast<double>(n) * 4.0 / seconds;
}

// How long data this rank leaves in cache stays there, in seconds: the backend's streaming op over
// arrays of `bytes_per_array` (a working set the caches hold) timed once per call, five calls a
// setting: back to back (warm), right after its arrays were evicted from the caches (cold), and after
// each of a doubling series of gaps in which the rank touches no memory. Its time climbs from the warm
// time toward the cold one as other processes sharing the caches take them over; the half-life is the
// gap where the median time has come half way, interpolated in log gap. Infinite when it does not come
// half way within the longest gap, when the cold time is not 1.5 times the warm one (too close to
// tell), or where the caches cannot be emptied on purpose (ComputePool::evict_from_caches).
double cache_half_life_seconds(Bytes bytes_per_array) {
  const std::int64_t n = std::max<Bytes>(bytes_per_array / 4, 1);
  detail::ComputePool pool(n, n);
  detail::ScaledCompute op;
  op.stream_floats = n;
  constexpr int kCalls = 5;
  // The median time of one call over kCalls, each after `before`.
  const auto median_call = [&](auto&& before) {
    std::vector<double> t(kCalls);
    for (double& ti : t) {
      before();
      const auto start = std::chrono::steady_clock::now();
      pool.run(op);
      ti = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    return median_of(std::move(t));
  };
  constexpr double kInfinite = std::numeric_limits<double>::infinity();
  const double warm = median_call([&] { pool.run(op); });
  bool evicted = true;
  const double cold = median_call([&] { evicted = pool.evict_from_caches(); });
  if (!evicted || !(cold > 1.5 * warm)) return kInfinite;
  // Arithmetic on registers only, until `seconds` have passed.
  volatile double sink = 0;
  const auto idle = [&sink](double seconds) {
    const auto start = std::chrono::steady_clock::now();
    double x = 1;
    while (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < seconds)
      for (int i = 0; i < 256; ++i) x = x * 1.0000001 + 1e-9;
    sink = sink + x;
  };
  double previous_gap = 0, previous_warm_share = 1;
  for (double gap = 0.5e-3; gap <= 64e-3; gap *= 2) {
    const double t = median_call([&] { idle(gap); });
    const double warm_share = std::clamp((cold - t) / (cold - warm), 0.0, 1.0);
    if (warm_share <= 0.5) {
      if (previous_gap == 0) return gap;
      const double f = (previous_warm_share - 0.5) / (previous_warm_share - warm_share);
      return std::exp(std::log(previous_gap) + f * (std::log(gap) - std::log(previous_gap)));
    }
    previous_gap = gap;
    previous_warm_share = warm_share;
  }
  return kInfinite;
}

// A barrier whose waiting ranks sleep between tests rather than spin as MPI_Barrier does, leaving the
// cores to the ranks still at work.
void sleeping_barrier() {
  MPI_Request request = MPI_REQUEST_NULL;
  MPI_CHECK(MPI_Ibarrier(MPI_COMM_WORLD, &request));
  int done = 0;
  for (;;) {
    MPI_CHECK(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
    if (done != 0) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// One-way time of a `bytes` message between this rank and its partner (ping-pong / 2).
double one_way_seconds(int partner, bool leader, Bytes bytes, double min_seconds) {
  std::vector<char> buffer(static_cast<std::size_t>(std::max<Bytes>(bytes, 1)));
  const int count = static_cast<int>(bytes);
  auto round_trip = [&] {
    if (leader) {
      MPI_CHECK(MPI_Send(buffer.data(), count, MPI_BYTE, partner, 0, MPI_COMM_WORLD));
      MPI_CHECK(MPI_Recv(buffer.data(), count, MPI_BYTE, partner, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
    } else {
      MPI_CHECK(MPI_Recv(buffer.data(), count, MPI_BYTE, partner, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
      MPI_CHECK(MPI_Send(buffer.data(), count, MPI_BYTE, partner, 0, MPI_COMM_WORLD));
    }
  };
  // Both partners must run the same number of round trips: the leader decides and tells the other.
  round_trip();
  int trips = 1;
  if (leader) {
    auto start = std::chrono::steady_clock::now();
    round_trip();
    const double one = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    trips = static_cast<int>(std::clamp(min_seconds / std::max(one, 1e-9), 1.0, 100000.0));
    MPI_CHECK(MPI_Send(&trips, 1, MPI_INT, partner, 1, MPI_COMM_WORLD));
  } else {
    round_trip();
    MPI_CHECK(MPI_Recv(&trips, 1, MPI_INT, partner, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
  }
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < trips; ++i) round_trip();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / (2.0 * trips);
}

// Seconds per element of every technique kernel (profile.hpp lists what each key measures), on this
// rank, at the settings the keys name; the work is technique_ops.hpp's, the backend's own.
std::map<std::string, double> technique_kernel_seconds(std::size_t n, int ranks, double min_seconds) {
  std::map<std::string, double> out;
  std::vector<float> g(n), m(n), score(n), sum(n), values(n);
  detail::fill_gradient_like(g, 1);
  detail::fill_gradient_like(m, 2);
  detail::fill_gradient_like(values, 3);
  const auto per_element = [&](auto&& body) { return time_per_call(body, min_seconds) / static_cast<double>(n); };

  TgcParams topk;
  topk.bits = 8;
  topk.topk_fraction = 0.1;
  TgcParams quant;
  quant.bits = 8;
  for (const auto& [key, p] : {std::pair{"topk", topk}, std::pair{"quantize", quant}}) {
    TgcCodec codec(p, n);
    std::vector<float> payload(codec.payload_floats(8));
    out[std::string("tgc.compress.") + key] = per_element([&] { codec.encode(g, 8, payload); });
    if (p.topk_fraction >= 1) {  // the adaptive rule, as an adaptive compress runs it before encoding
      int width = 0;
      out["tgc.choose_bits"] = per_element([&] { width += codec.choose_bits(g); });
      if (width < 0) throw Error("calibrate: choose_bits returned a negative width");
    }
    // Decompress: zero the gradient, then every rank's payload (top-k) or one payload (quantised).
    const int payloads = p.topk_fraction < 1 ? ranks : 1;
    out[std::string("tgc.decompress.") + (p.topk_fraction < 1 ? "sparse" : "quantized")] = per_element([&] {
      std::fill(sum.begin(), sum.end(), 0.0f);
      for (int r = 0; r < payloads; ++r) codec.decode_add(payload, 8, sum);
    });
  }
  const kernels::QuantSpec spec{8, 256};
  std::vector<std::uint8_t> codes(kernels::quant_code_bytes(n, 8)), out_codes(codes.size());
  std::vector<float> scales(kernels::quant_num_blocks(n, spec)), out_scales(scales.size());
  kernels::cpu::quantize(values, spec, codes, scales);
  out["tgc.requantize"] = per_element([&] { detail::requantize(codes, scales, g, spec, sum, out_codes, out_scales); });

  std::vector<std::uint8_t> mask(n), block_mask;
  for (const auto& [key, granularity] : {std::pair{"unstructured", OpCost::Sparsity::Unstructured},
                                          std::pair{"block", OpCost::Sparsity::Block}, std::pair{"2:4", OpCost::Sparsity::TwoFour}})
    out[std::string("dsa.mask_refresh.") + key] =
        per_element([&] { detail::refresh_masks(granularity, 32, 0.3, g, m, score, mask, block_mask); });
  detail::refresh_masks(OpCost::Sparsity::Unstructured, 0, 0.3, g, m, score, mask, block_mask);
  std::vector<float> params(values), v(n, 1e-4f), moment(m);
  int step = 0;
  out["dsa.masked_step"] = per_element([&] { kernels::cpu::masked_adam(params, g, moment, v, mask, kernels::AdamSpec{}, ++step); });
  out["precision.loss_scale"] = per_element([&] { detail::unscale_checked(g, sum); });
  float crest = 0;
  out["precision.statistics"] = per_element([&] { crest += detail::crest_factor(g); });
  return out;
}

// DSA's sparse GEMMs, FLOP/s of the non-zero work: block-sparse (32×32 blocks, density 0.3) and 2:4.
std::map<std::string, FlopsPerSec> sparse_gemm_rates(std::size_t d, double min_seconds) {
  std::vector<float> x(d * d), w(d * d), y(d * d), score(d * d);
  detail::fill_gradient_like(x, 4);
  detail::fill_gradient_like(w, 5);
  for (std::size_t i = 0; i < w.size(); ++i) score[i] = std::abs(w[i]);
  std::vector<std::uint8_t> block_mask((d / 32) * (d / 32)), mask(d * d);
  kernels::cpu::mask_block(score, d, d, 32, 0.3, block_mask, mask);
  const kernels::BsrMatrix bsr = kernels::bsr_from_dense(w, d, d, 32, block_mask);
  const kernels::Sparse24Matrix s24 = kernels::prune_24(w, d, d);
  const double dense_flops = 2.0 * static_cast<double>(d) * static_cast<double>(d) * static_cast<double>(d);
  const double block_flops = dense_flops * static_cast<double>(bsr.nnz_blocks()) / static_cast<double>(block_mask.size());
  return {{"block", block_flops / time_per_call([&] { kernels::cpu::bsr_gemm_nt(x, d, bsr.view(), y); }, min_seconds)},
          {"2:4", 0.5 * dense_flops / time_per_call([&] { kernels::cpu::sparse24_gemm_nt(x, d, s24.view(), y); }, min_seconds)}};
}

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

std::string host_name() {
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0) return "unknown";
  return name;
}

}  // namespace

GemmRates measure_gemm_rates(const MpiSession& mpi, std::int64_t m, std::int64_t n, std::int64_t k, double min_seconds) {
  detail::flush_subnormals_on_this_thread();  // as the CPU backend runs (cpu_compute.hpp)
  MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
  const std::vector<double> seconds = over_ranks(gemm_seconds(m, n, k, min_seconds), mpi.size());
  const double flops = 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  GemmRates r;
  r.median = flops / median_of(seconds);
  for (double s : seconds) r.ranks.push_back(flops / s);
  return r;
}

FlopsPerSec measure_gemm_rate(const MpiSession& mpi, std::int64_t m, std::int64_t n, std::int64_t k, double min_seconds) {
  return measure_gemm_rates(mpi, m, n, k, min_seconds).median;
}

MachineProfile calibrate_cpu(const MpiSession& mpi, const CalibrateOptions& o) {
  detail::flush_subnormals_on_this_thread();  // as the CPU backend runs (cpu_compute.hpp)
  MachineProfile p;
  p.device = "cpu-fp32";
  p.progress = CommProgress::Polled;  // the CPU backend tests its requests between compute ops (profile.hpp)
  const int ranks = mpi.size();

  // GEMMs: every rank runs the same shape at the same time.
  std::vector<GemmSample> samples;
  auto measure = [&](std::int64_t m, std::int64_t n, std::int64_t k) {
    samples.push_back({m, n, k, DType::FP32, measure_gemm_rate(mpi, m, n, k, o.seconds_per_point)});
  };
  for (auto m : o.gemm_dims) {
    for (auto n : o.gemm_dims) {
      for (auto k : o.gemm_dims) measure(m, n, k);
    }
  }
  FlopsPerSec best = 0;
  for (const auto& s : samples) best = std::max(best, s.rate);
  // The CPU backend executes every dtype in fp32: give the other dtypes the same measurements.
  for (DType t : {DType::FP32, DType::TF32, DType::BF16, DType::FP16, DType::FP8}) {
    p.gemm_rate[t] = best;
    for (const auto& s : samples) {
      GemmSample copy = s;
      copy.dtype = t;
      p.gemm_samples.push_back(copy);
    }
  }

  for (Bytes array : o.stream_bytes) {
    MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
    const BytesPerSec bw = median_over_ranks(stream_bandwidth(array, 2 * o.seconds_per_point), ranks);
    p.memory_samples.push_back({2 * array, bw});
    p.memory_bandwidth = bw;  // the largest working set: the memory's own bandwidth
  }
  // How fast the caches lose what a rank leaves there, on the largest working set that still streams
  // at least 1.5 times faster than memory (one the caches hold): rank 0 alone, the others asleep, so
  // that what empties the caches is the machine's other processes, not the calibration's own ranks
  // (each streaming its arrays in the gaps of its neighbour on the same core would).
  for (auto it = o.stream_bytes.rbegin(); it != o.stream_bytes.rend(); ++it) {
    const auto sample = std::find_if(p.memory_samples.begin(), p.memory_samples.end(),
                                     [&](const StreamSample& m) { return m.bytes == 2 * *it; });
    if (sample == p.memory_samples.end() || sample->bandwidth < 1.5 * p.memory_bandwidth) continue;
    MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
    double half_life = mpi.rank() == 0 ? cache_half_life_seconds(*it) : 0;
    sleeping_barrier();
    MPI_CHECK(MPI_Bcast(&half_life, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD));
    if (std::isfinite(half_life)) p.cache_half_life = Time::from_seconds(half_life);
    break;
  }
  MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
  p.launch_overhead = Time::from_seconds(median_over_ranks(gemm_seconds(8, 8, 8, o.seconds_per_point), ranks));

  // Technique kernels and sparse GEMMs, every rank at once, the median over ranks.
  MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
  for (const auto& [key, seconds] : technique_kernel_seconds(static_cast<std::size_t>(o.kernel_elements), ranks, o.seconds_per_point))
    p.kernel_seconds_per_element[key] = median_over_ranks(seconds, ranks);
  MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
  for (const auto& [key, rate] : sparse_gemm_rates(static_cast<std::size_t>(o.sparse_gemm_dim), o.seconds_per_point))
    p.sparse_gemm_rate[key] = median_over_ranks(rate, ranks);

  if (ranks >= 2 && o.p2p_sizes.size() >= 2) {
    const int partner = mpi.rank() % 2 == 0 ? mpi.rank() + 1 : mpi.rank() - 1;
    const bool paired = partner < ranks;
    std::vector<double> one_way;
    for (Bytes size : o.p2p_sizes) {
      MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
      const double mine = paired ? one_way_seconds(partner, mpi.rank() % 2 == 0, size, o.seconds_per_point) : 0;
      // Unpaired ranks (an odd count) report the paired median: use only paired ranks' figures.
      std::vector<double> all(static_cast<std::size_t>(ranks));
      MPI_CHECK(MPI_Allgather(&mine, 1, MPI_DOUBLE, all.data(), 1, MPI_DOUBLE, MPI_COMM_WORLD));
      all.resize(static_cast<std::size_t>(ranks - ranks % 2));
      std::sort(all.begin(), all.end());
      one_way.push_back(all[all.size() / 2]);
    }
    const std::size_t last = one_way.size() - 1;
    const double dt = one_way[last] - one_way[last - 1];
    const double db = static_cast<double>(o.p2p_sizes[last] - o.p2p_sizes[last - 1]);
    LinkProfile link;
    link.latency = Time::from_seconds(one_way.front());
    link.bandwidth = dt > 0 ? db / dt : static_cast<double>(o.p2p_sizes[last]) / one_way[last];
    p.link = link;
  }
  p.provenance = Provenance{host_name(), utc_now(), built_revision(), ranks, "twinbed calibrate",
                            static_cast<int>(std::thread::hardware_concurrency())};
  return p;
}

}  // namespace twinbed::real
