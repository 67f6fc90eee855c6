// The exact sizes of TGC's compressed payloads (formats in tgc.hpp), header-only: the simulator's TGC
// pass (core/passes/tgc.hpp) charges exactly what these kernels send without linking them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace twinbed::kernels {

enum class Rounding { nearest, stochastic };

struct QuantSpec {
  int bits = 8;                   // 2, 4, 8 or 16
  std::size_t block = 256;        // elements per scale; positive multiple of 8
  Rounding rounding = Rounding::nearest;
  std::uint64_t seed = 0;         // stochastic rounding only; use a new seed every step
};

namespace detail {
// Throws std::invalid_argument("<kernel>: ...") for a bit width outside {2, 4, 8, 16} or a block that is
// not a positive multiple of 8.
inline void check_quant_spec(const char* kernel, const QuantSpec& spec) {
  if (spec.bits != 2 && spec.bits != 4 && spec.bits != 8 && spec.bits != 16)
    throw std::invalid_argument(std::string(kernel) + ": bits must be one of {2, 4, 8, 16}, got " + std::to_string(spec.bits));
  if (spec.block == 0 || spec.block % 8 != 0)
    throw std::invalid_argument(std::string(kernel) + ": block must be a positive multiple of 8 elements, got " +
                                std::to_string(spec.block));
}
}  // namespace detail

// ceil(n / block).
inline std::size_t quant_num_blocks(std::size_t n, const QuantSpec& spec) {
  detail::check_quant_spec("quant_num_blocks", spec);
  return (n + spec.block - 1) / spec.block;
}
// ceil(n·bits / 8).
inline std::size_t quant_code_bytes(std::size_t n, int bits) {
  detail::check_quant_spec("quant_code_bytes", QuantSpec{bits, 8});
  return (n * static_cast<std::size_t>(bits) + 7) / 8;
}
// Codes + a 4-byte fp32 scale per block.
inline std::size_t quant_payload_bytes(std::size_t n, const QuantSpec& spec) {
  return quant_code_bytes(n, spec.bits) + sizeof(float) * quant_num_blocks(n, spec);
}
// k entries of a uint32 index and an fp32 value: 8·k bytes.
inline std::size_t sparse_payload_bytes(std::size_t k) { return k * (sizeof(std::uint32_t) + sizeof(float)); }
// k indices, and the k values quantised with `value_spec`: 4·k + quant_payload_bytes(k).
inline std::size_t sparse_quant_payload_bytes(std::size_t k, const QuantSpec& value_spec) {
  return k * sizeof(std::uint32_t) + quant_payload_bytes(k, value_spec);
}

}  // namespace twinbed::kernels
