#include "gradient_exchange.hpp"

#include <algorithm>

namespace twinbed::train::detail {

GradientExchange::GradientExchange(const std::optional<TgcParams>& tgc, std::size_t n) : tgc_(tgc), n_(n) {
  if (tgc_ && tgc_->lossless()) tgc_.reset();
  if (tgc_) codec_.emplace(*tgc_, n);
}

int GradientExchange::exchange(std::span<float> g, Ranks& ranks) {
  const int R = ranks.size();
  const float inv = 1.0f / static_cast<float>(R);
  if (!codec_) {
    ranks.all_reduce(g);
    for (float& x : g) x *= inv;
    return 0;
  }
  int bits = tgc_->bits;
  if (tgc_->adaptive) {
    // Every rank's choice, the widest wins: payloads must have one size.
    const auto mine = static_cast<float>(codec_->choose_bits(g));
    std::vector<float> all(static_cast<std::size_t>(R));
    ranks.all_gather(std::span<const float>(&mine, 1), all);
    bits = static_cast<int>(*std::max_element(all.begin(), all.end()));
  }
  packed_.resize(codec_->payload_floats(bits));
  codec_->encode(g, bits, packed_);
  gathered_.resize(packed_.size() * static_cast<std::size_t>(R));
  ranks.all_gather(packed_, gathered_);

  // Decode every rank's payload in rank order (the same additions on every rank) and average.
  sum_.assign(n_, 0.0f);
  for (int r = 0; r < R; ++r)
    codec_->decode_add(std::span<const float>(gathered_).subspan(static_cast<std::size_t>(r) * packed_.size(), packed_.size()), bits, sum_);
  for (std::size_t i = 0; i < n_; ++i) g[i] = sum_[i] * inv;
  return bits;
}

}  // namespace twinbed::train::detail
