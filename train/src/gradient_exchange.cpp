#include "gradient_exchange.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "twinbed/core/error.hpp"
#include "twinbed/kernels/tgc.hpp"

namespace twinbed::train::detail {
namespace kc = twinbed::kernels::cpu;
using kernels::QuantSpec;

GradientExchange::GradientExchange(std::optional<TgcParams> tgc, std::size_t n) : tgc_(std::move(tgc)), n_(n), k_(n) {
  if (tgc_ && tgc_->lossless()) tgc_.reset();
  if (!tgc_) return;
  if (tgc_->topk_fraction < 1)
    k_ = std::clamp<std::size_t>(static_cast<std::size_t>(std::ceil(tgc_->topk_fraction * static_cast<double>(n))), 1, n);
  if (tgc_->error_feedback) residual_.assign(n, 0.0f);
  sum_.resize(n);
}

std::size_t GradientExchange::payload_bytes(int bits) const {
  const std::size_t block = static_cast<std::size_t>(tgc_ ? tgc_->block_size : 256);
  const bool sparse = k_ < n_;
  if (!sparse) return bits ? kernels::quant_payload_bytes(n_, QuantSpec{bits, block}) : n_ * sizeof(float);
  return bits ? kernels::sparse_quant_payload_bytes(k_, QuantSpec{bits, block}) : kernels::sparse_payload_bytes(k_);
}

int GradientExchange::exchange(std::span<float> g, Ranks& ranks) {
  const int R = ranks.size();
  const float inv = 1.0f / static_cast<float>(R);
  if (!tgc_) {
    ranks.all_reduce(g);
    for (float& x : g) x *= inv;
    return 0;
  }
  const TgcParams& p = *tgc_;
  const std::size_t block = static_cast<std::size_t>(p.block_size);
  // acc = g + residual (error feedback) or g.
  std::span<float> acc = g;
  if (p.error_feedback) {
    kc::ef_accumulate(g, residual_);
    acc = residual_;
  }
  int bits = p.bits;
  if (p.adaptive) {
    // Every rank's choice, the widest wins: payloads must have one size.
    const float mine = static_cast<float>(kc::choose_bits(acc, block, static_cast<float>(p.adaptive_tolerance)));
    std::vector<float> all(static_cast<std::size_t>(R));
    ranks.all_gather(std::span<const float>(&mine, 1), all);
    bits = static_cast<int>(*std::max_element(all.begin(), all.end()));
  }
  const QuantSpec spec{bits == 0 ? 8 : bits, block};
  const bool sparse = k_ < n_;

  // Select, quantise, and keep what was not sent in the residual.
  std::span<const float> sent = acc;  // the values to encode
  if (sparse) {
    index_.resize(k_);
    values_.resize(k_);
    kc::topk(acc, k_, index_, values_);
    if (p.error_feedback) kc::ef_clear_sent(index_, residual_);
    sent = values_;
  }
  if (bits) {
    codes_.resize(kernels::quant_code_bytes(sent.size(), bits));
    scales_.resize(kernels::quant_num_blocks(sent.size(), spec));
    kc::quantize(sent, spec, codes_, scales_);
    if (p.error_feedback) {
      decoded_.resize(sent.size());
      kc::dequantize(codes_, scales_, spec, decoded_);
      if (sparse) {
        for (std::size_t i = 0; i < k_; ++i) decoded_[i] = values_[i] - decoded_[i];  // what quantising lost
        kc::scatter_add(index_, decoded_, residual_);
      } else {
        for (std::size_t i = 0; i < n_; ++i) residual_[i] -= decoded_[i];
      }
    }
  }

  // Pack: [indices (sparse)] [codes + scales, or fp32 values], padded to whole floats.
  const std::size_t bytes = payload_bytes(bits);
  bytes_.assign((bytes + 3) / 4 * 4, 0);
  std::uint8_t* out = bytes_.data();
  if (sparse) out = static_cast<std::uint8_t*>(std::memcpy(out, index_.data(), k_ * 4)) + k_ * 4;
  if (bits) {
    out = static_cast<std::uint8_t*>(std::memcpy(out, codes_.data(), codes_.size())) + codes_.size();
    std::memcpy(out, scales_.data(), scales_.size() * sizeof(float));
  } else {
    std::memcpy(out, sent.data(), sent.size() * sizeof(float));
  }
  packed_.resize(bytes_.size() / 4);
  std::memcpy(packed_.data(), bytes_.data(), bytes_.size());
  gathered_.resize(packed_.size() * static_cast<std::size_t>(R));
  ranks.all_gather(packed_, gathered_);

  // Decode every rank's payload in rank order (the same additions on every rank) and average.
  std::fill(sum_.begin(), sum_.end(), 0.0f);
  const std::size_t count = sparse ? k_ : n_;
  decoded_.resize(count);
  for (int r = 0; r < R; ++r) {
    const auto* in = reinterpret_cast<const std::uint8_t*>(gathered_.data() + static_cast<std::size_t>(r) * packed_.size());
    if (sparse) {
      std::memcpy(index_.data(), in, k_ * 4);
      in += k_ * 4;
    }
    if (bits) {
      std::memcpy(codes_.data(), in, codes_.size());
      std::memcpy(scales_.data(), in + codes_.size(), scales_.size() * sizeof(float));
      kc::dequantize(codes_, scales_, spec, decoded_);
    } else {
      std::memcpy(decoded_.data(), in, count * sizeof(float));
    }
    if (sparse) {
      kc::scatter_add(index_, decoded_, sum_);
    } else {
      for (std::size_t i = 0; i < n_; ++i) sum_[i] += decoded_[i];
    }
  }
  for (std::size_t i = 0; i < n_; ++i) g[i] = sum_[i] * inv;
  return bits;
}

}  // namespace twinbed::train::detail
