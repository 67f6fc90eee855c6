// Internal to train/: the data-parallel gradient exchange of one step, dense or TGC-compressed
// (trainer.hpp describes the formats; real/tgc_codec.hpp encodes and decodes them). Every rank ends
// with the same mean gradient.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "twinbed/core/passes/tgc.hpp"
#include "twinbed/real/tgc_codec.hpp"
#include "twinbed/train/trainer.hpp"

namespace twinbed::train::detail {

class GradientExchange {
 public:
  // `tgc`: the variant's parameters, or nullopt for a dense all-reduce. n: gradient elements.
  GradientExchange(const std::optional<TgcParams>& tgc, std::size_t n);

  // g: this rank's gradient; afterwards the mean over the ranks, identical on every rank. Returns the
  // quantisation width used (0: values sent as fp32).
  int exchange(std::span<float> g, Ranks& ranks);

 private:
  std::optional<TgcParams> tgc_;
  std::size_t n_ = 0;
  std::optional<real::TgcCodec> codec_;
  std::vector<float> packed_, gathered_, sum_;
};

}  // namespace twinbed::train::detail
