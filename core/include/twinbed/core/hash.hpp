// Hashing for determinism-sensitive keys (ECMP choices, memo keys): splitmix64 (Steele, Lea & Flood,
// 2014), cheap and well mixed, and a combiner built on it. Same results on every platform and run.
#pragma once

#include <cstdint>

namespace twinbed {

constexpr std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// Folds `v` into the running hash `h`.
constexpr std::uint64_t hash_combine(std::uint64_t h, std::uint64_t v) {
  return splitmix64(h ^ (v + 0x9E3779B97F4A7C15ULL + (h << 6) + (h >> 2)));
}

}  // namespace twinbed
