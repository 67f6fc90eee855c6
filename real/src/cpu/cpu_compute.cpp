#include "cpu_compute.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <string>

#include "twinbed/core/error.hpp"

namespace twinbed::real::detail {

std::int64_t ScaledCompute::pool_floats() const {
  if (matmul) return batch * (m * k + k * n + m * n);
  return 2 * stream_floats;
}

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

ComputePool::ComputePool(std::int64_t floats) : pool_(static_cast<std::size_t>(std::max<std::int64_t>(floats, 0)), 0.0f) {}

void ComputePool::run(const ScaledCompute& op) {
  if (op.pool_floats() > size())
    throw InvalidArgument("compute op needs " + std::to_string(op.pool_floats()) + " floats, the pool holds " +
                          std::to_string(size()));
  float* base = pool_.data();
  if (op.matmul) {
    // Each batch element on its own memory, as a batched kernel would read it (reusing one A, B, C would
    // run from cache and be faster than the op it stands for).
    using Matrix = Eigen::Map<Eigen::MatrixXf>;
    const std::int64_t a = op.m * op.k, b = op.k * op.n;
    for (std::int64_t i = 0; i < op.batch; ++i) {
      float* at = base + i * (a + b + op.m * op.n);
      Matrix A(at, op.m, op.k), B(at + a, op.k, op.n), C(at + a + b, op.m, op.n);
      C.noalias() = A * B;
    }
  } else if (op.stream_floats > 0) {
    Eigen::Map<Eigen::ArrayXf> x(base, op.stream_floats), y(base + op.stream_floats, op.stream_floats);
    y = x * 1.0001f + 0.5f;
  }
}

}  // namespace twinbed::real::detail
