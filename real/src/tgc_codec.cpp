#include "twinbed/real/tgc_codec.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "twinbed/core/error.hpp"
#include "twinbed/kernels/tgc.hpp"

namespace twinbed::real {
namespace kc = twinbed::kernels::cpu;
using kernels::QuantSpec;

namespace {
QuantSpec spec_of(int bits, const TgcParams& p) { return QuantSpec{bits == 0 ? 8 : bits, static_cast<std::size_t>(p.block_size)}; }

void check_size(const char* what, std::size_t got, std::size_t want) {
  if (got != want)
    throw InvalidArgument(std::string("TgcCodec::") + what + ": " + std::to_string(got) + " floats given, " +
                          std::to_string(want) + " expected");
}
}  // namespace

TgcCodec::TgcCodec(const TgcParams& p, std::size_t n) : p_(p), n_(n), k_(n) {
  if (p_.lossless()) throw InvalidArgument("TgcCodec: the tgc parameters compress nothing (bits none, topk_fraction 1)");
  if (p_.topk_fraction < 1 && n > 0)
    k_ = std::clamp<std::size_t>(static_cast<std::size_t>(std::ceil(p_.topk_fraction * static_cast<double>(n))), 1, n);
  if (p_.error_feedback) residual_.assign(n, 0.0f);
}

std::size_t TgcCodec::payload_bytes(int bits) const {
  if (!sparse()) return bits ? kernels::quant_payload_bytes(n_, spec_of(bits, p_)) : n_ * sizeof(float);
  return bits ? kernels::sparse_quant_payload_bytes(k_, spec_of(bits, p_)) : kernels::sparse_payload_bytes(k_);
}

int TgcCodec::choose_bits(std::span<const float> g) {
  check_size("choose_bits", g.size(), n_);
  const auto block = static_cast<std::size_t>(p_.block_size);
  const auto tol = static_cast<float>(p_.adaptive_tolerance);
  if (!p_.error_feedback) return kc::choose_bits(g, block, tol);
  decoded_.resize(n_);
  for (std::size_t i = 0; i < n_; ++i) decoded_[i] = g[i] + residual_[i];
  return kc::choose_bits(decoded_, block, tol);
}

void TgcCodec::encode(std::span<const float> g, int bits, std::span<float> payload) {
  check_size("encode (gradient)", g.size(), n_);
  check_size("encode (payload)", payload.size(), payload_floats(bits));
  const QuantSpec spec = spec_of(bits, p_);
  // acc = g + residual (error feedback) or g.
  std::span<const float> acc = g;
  if (p_.error_feedback) {
    kc::ef_accumulate(g, residual_);
    acc = residual_;
  }
  // Select, quantise, and keep what was not delivered in the residual.
  std::span<const float> sent = acc;  // the values to encode
  if (sparse()) {
    index_.resize(k_);
    values_.resize(k_);
    kc::topk(acc, k_, index_, values_);
    if (p_.error_feedback) kc::ef_clear_sent(index_, residual_);
    sent = values_;
  }
  if (bits) {
    codes_.resize(kernels::quant_code_bytes(sent.size(), bits));
    scales_.resize(kernels::quant_num_blocks(sent.size(), spec));
    kc::quantize(sent, spec, codes_, scales_);
    if (p_.error_feedback) {
      decoded_.resize(sent.size());
      kc::dequantize(codes_, scales_, spec, decoded_);
      if (sparse()) {
        for (std::size_t i = 0; i < k_; ++i) decoded_[i] = values_[i] - decoded_[i];  // what quantising lost
        kc::scatter_add(index_, decoded_, residual_);
      } else {
        for (std::size_t i = 0; i < n_; ++i) residual_[i] -= decoded_[i];
      }
    }
  }
  // Pack: [indices] [codes + scales, or fp32 values], zero padding to whole floats.
  auto* out = reinterpret_cast<std::uint8_t*>(payload.data());
  std::memset(out, 0, payload.size_bytes());
  if (sparse()) out = static_cast<std::uint8_t*>(std::memcpy(out, index_.data(), k_ * 4)) + k_ * 4;
  if (bits) {
    out = static_cast<std::uint8_t*>(std::memcpy(out, codes_.data(), codes_.size())) + codes_.size();
    std::memcpy(out, scales_.data(), scales_.size() * sizeof(float));
  } else {
    std::memcpy(out, sent.data(), sent.size() * sizeof(float));
  }
}

void TgcCodec::decode_add(std::span<const float> payload, int bits, std::span<float> sum) {
  check_size("decode_add (payload)", payload.size(), payload_floats(bits));
  check_size("decode_add (sum)", sum.size(), n_);
  const QuantSpec spec = spec_of(bits, p_);
  const std::size_t count = sparse() ? k_ : n_;
  const auto* in = reinterpret_cast<const std::uint8_t*>(payload.data());
  if (sparse()) {
    index_.resize(k_);
    std::memcpy(index_.data(), in, k_ * 4);
    in += k_ * 4;
  }
  decoded_.resize(count);
  if (bits) {
    codes_.resize(kernels::quant_code_bytes(count, bits));
    scales_.resize(kernels::quant_num_blocks(count, spec));
    std::memcpy(codes_.data(), in, codes_.size());
    std::memcpy(scales_.data(), in + codes_.size(), scales_.size() * sizeof(float));
    kc::dequantize(codes_, scales_, spec, decoded_);
  } else {
    std::memcpy(decoded_.data(), in, count * sizeof(float));
  }
  if (sparse()) {
    kc::scatter_add(index_, decoded_, sum);
  } else {
    for (std::size_t i = 0; i < n_; ++i) sum[i] += decoded_[i];
  }
}

}  // namespace twinbed::real
