#include "cpu_compute.hpp"

#include <Eigen/Core>
#if defined(__SSE__) || defined(__x86_64__)
#include <emmintrin.h>
#include <pmmintrin.h>
#include <xmmintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <string>

#include "twinbed/core/error.hpp"

namespace twinbed::real::detail {

void flush_subnormals_on_this_thread() {
#if defined(__SSE__) || defined(__x86_64__)
  _MM_SET_FLUSH_ZERO_MODE(_MM_FLUSH_ZERO_ON);
  _MM_SET_DENORMALS_ZERO_MODE(_MM_DENORMALS_ZERO_ON);
#endif
}

std::int64_t ScaledCompute::input_floats() const { return matmul ? batch * (m * k + k * n) : stream_floats; }
std::int64_t ScaledCompute::output_floats() const { return matmul ? batch * m * n : stream_floats; }

ScaledCompute scale_compute(const OpCost& cost, double scale) {
  ScaledCompute s;
  if (cost.is_matmul()) {
    if (cost.m < 0 || cost.n < 0 || cost.k < 0 || cost.batch < 0)
      throw InvalidArgument("compute op '" + cost.name + "' has a negative shape");
    s.matmul = true;
    s.m = cost.m == 0 ? 0 : std::max<std::int64_t>(1, std::llround(static_cast<double>(cost.m) * scale));
    s.n = cost.n;
    s.k = cost.k;
    s.batch = cost.batch;
    s.flops = cost.m == 0 ? 0 : cost.flops * static_cast<double>(s.m) / static_cast<double>(cost.m);
  } else {
    if (cost.bytes < 0) throw InvalidArgument("compute op '" + cost.name + "' has negative bytes");
    const std::int64_t bytes = std::llround(static_cast<double>(cost.bytes) * scale);
    // Half the bytes read, half written, in floats.
    s.stream_floats = bytes / 8;
    s.flops = cost.bytes == 0 ? 0 : cost.flops * static_cast<double>(bytes) / static_cast<double>(cost.bytes);
  }
  return s;
}

ComputePool::ComputePool(std::int64_t input_floats, std::int64_t output_floats)
    : input_(static_cast<std::size_t>(std::max<std::int64_t>(input_floats, 0))),
      output_(static_cast<std::size_t>(std::max<std::int64_t>(output_floats, 0)), 0.0f) {
  for (std::size_t i = 0; i < input_.size(); ++i) input_[i] = 0.5f + 0.5f * static_cast<float>(i % 1021) / 1021.0f;
}

void ComputePool::run(const ScaledCompute& op) {
  if (op.input_floats() > static_cast<std::int64_t>(input_.size()) || op.output_floats() > static_cast<std::int64_t>(output_.size()))
    throw InvalidArgument("compute op needs " + std::to_string(op.input_floats()) + " input and " +
                          std::to_string(op.output_floats()) + " output floats, the pool holds " +
                          std::to_string(input_.size()) + " and " + std::to_string(output_.size()));
  const float* in = input_.data();
  float* out = output_.data();
  if (op.matmul) {
    // Each batch element on its own memory, as a batched kernel would read it (reusing one A, B, C would
    // run from cache and be faster than the op it stands for).
    using In = Eigen::Map<const Eigen::MatrixXf>;
    using Out = Eigen::Map<Eigen::MatrixXf>;
    const std::int64_t a = op.m * op.k, b = op.k * op.n, c = op.m * op.n;
    for (std::int64_t i = 0; i < op.batch; ++i) {
      In A(in + i * (a + b), op.m, op.k), B(in + i * (a + b) + a, op.k, op.n);
      Out C(out + i * c, op.m, op.n);
      C.noalias() = A * B;
    }
  } else if (op.stream_floats > 0) {
    Eigen::Map<const Eigen::ArrayXf> x(in, op.stream_floats);
    Eigen::Map<Eigen::ArrayXf> y(out, op.stream_floats);
    y = x * 1.0001f + 0.5f;
  }
}

bool ComputePool::evict_from_caches() {
#if defined(__SSE2__) || defined(__x86_64__)
  constexpr std::size_t kLine = 64;  // x86's cache line
  for (const std::vector<float>* region : {&input_, &output_}) {
    const char* bytes = reinterpret_cast<const char*>(region->data());
    for (std::size_t at = 0; at < region->size() * sizeof(float); at += kLine) _mm_clflush(bytes + at);
  }
  _mm_mfence();
  return true;
#else
  return false;
#endif
}

}  // namespace twinbed::real::detail
