// TGC's payload codec: one rank's gradient (plus its error-feedback residual) encoded into the payload
// it sends, and received payloads decoded and summed. The one implementation of the format, shared by
// `twinbed train` (which exchanges real model gradients) and the CPU Plan backend (which executes the
// tgc pass's compress / decompress ops, cpu_backend.hpp).
//
// Payload (kernels/payload.hpp sizes it; core/passes/tgc.hpp charges exactly that), padded with zero
// bytes to whole floats so it travels through float collectives:
//   [k uint32 indices, top-k only] [codes (quant_code_bytes) + fp32 scales, or fp32 values]
// Encoding: acc = g + residual (error feedback) or g; top-k keeps the k = ⌈topk_fraction·n⌉ largest
// |acc| (kernels' exact top-k); the values sent are quantised at `bits` (0: fp32); with error feedback
// the residual keeps everything not delivered (the unselected entries and each value's quantisation
// error). Deterministic: the same inputs give the same payload bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "twinbed/core/passes/tgc.hpp"

namespace twinbed::real {

class TgcCodec {
 public:
  // n gradient elements. `p` must be lossy (TgcParams::lossless() false; InvalidArgument otherwise).
  TgcCodec(const TgcParams& p, std::size_t n);

  std::size_t elements() const { return n_; }
  std::size_t kept() const { return k_; }  // entries sent: k, or n when dense
  bool sparse() const { return k_ < n_; }
  // Payload bytes for `bits` (0: fp32 values), before padding, and the padded size in floats.
  std::size_t payload_bytes(int bits) const;
  std::size_t payload_floats(int bits) const { return (payload_bytes(bits) + 3) / 4; }

  // The adaptive rule's width for g + residual (kernels' choose_bits with adaptive_tolerance).
  int choose_bits(std::span<const float> g);
  // Encodes g (n elements) at `bits` into `payload` (payload_floats(bits) floats), updating the
  // residual. g is not modified.
  void encode(std::span<const float> g, int bits, std::span<float> payload);
  // sum += decode(payload): a payload of `bits` as encode wrote it. sum has n elements.
  void decode_add(std::span<const float> payload, int bits, std::span<float> sum);

  const std::vector<float>& residual() const { return residual_; }

 private:
  TgcParams p_;
  std::size_t n_ = 0, k_ = 0;
  std::vector<float> residual_;  // error feedback
  std::vector<std::uint32_t> index_;
  std::vector<float> values_, decoded_, scales_;
  std::vector<std::uint8_t> codes_;
};

}  // namespace twinbed::real
