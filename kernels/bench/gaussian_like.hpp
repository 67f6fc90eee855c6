// The benchmarks' inputs: a fast deterministic N(0,1)-like sequence (a centred, scaled sum of four
// uniforms; benchmarks need realistic magnitudes, not statistical quality). Shared by bench_kernels and
// bench_kernels_cuda; needs no benchmark library.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace twinbed::kernels::bench {

inline std::vector<float> gaussian_like(std::size_t n, std::uint64_t seed) {
  std::vector<float> v(n);
  std::uint64_t s = seed * 0x9e3779b97f4a7c15ULL + 1;
  for (auto& x : v) {
    float acc = 0.0f;
    for (int j = 0; j < 4; ++j) {
      s = s * 6364136223846793005ULL + 1442695040888963407ULL;
      acc += static_cast<float>(s >> 40) * (1.0f / 16777216.0f);
    }
    x = (acc - 2.0f) * 1.7320508f;  // variance of a sum of 4 U[0,1) is 1/3
  }
  return v;
}

}  // namespace twinbed::kernels::bench
