// Internal to train/: the data-parallel gradient exchange of one step, dense or TGC-compressed
// (trainer.hpp describes the formats). Every rank ends with the same mean gradient.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "twinbed/core/passes/tgc.hpp"
#include "twinbed/train/trainer.hpp"

namespace twinbed::train::detail {

class GradientExchange {
 public:
  // `tgc`: the variant's parameters, or nullopt for a dense all-reduce. n: gradient elements.
  GradientExchange(std::optional<TgcParams> tgc, std::size_t n);

  // g: this rank's gradient; afterwards the mean over the ranks, identical on every rank. Returns the
  // quantisation width used (0: values sent as fp32).
  int exchange(std::span<float> g, Ranks& ranks);

  // The payload one rank sends for n elements at `bits` (kernels/payload.hpp's sizes), before padding
  // to whole floats: what the simulator's pass charges.
  std::size_t payload_bytes(int bits) const;

 private:
  std::optional<TgcParams> tgc_;
  std::size_t n_ = 0;
  std::size_t k_ = 0;                 // top-k entries (n when dense)
  std::vector<float> residual_;       // error feedback
  std::vector<std::uint32_t> index_;
  std::vector<float> values_, decoded_, sum_;
  std::vector<std::uint8_t> codes_, bytes_;
  std::vector<float> scales_, packed_, gathered_;
};

}  // namespace twinbed::train::detail
