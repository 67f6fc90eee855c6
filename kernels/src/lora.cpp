// LoRA forward/backward/merge on the CPU through Eigen; the low-rank terms accumulate in place
// (noalias +=) so no batch × out temporary is ever formed.
#include "twinbed/kernels/lora.hpp"

#include <Eigen/Core>

#include "validate.hpp"

namespace twinbed::kernels {
namespace {
using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using CMap = Eigen::Map<const RowMat>;
using MMap = Eigen::Map<RowMat>;
Eigen::Index ix(std::size_t v) { return static_cast<Eigen::Index>(v); }

void check_wab(const char* k, const LoraShape& s, std::size_t w, std::size_t a, std::size_t b) {
  detail::check_lora_shape(k, s);
  detail::require_size(k, "w", w, "out·in", s.out * s.in);
  detail::require_size(k, "a", a, "rank·in", s.rank * s.in);
  detail::require_size(k, "b", b, "out·rank", s.out * s.rank);
}

void merge(const char* k, const LoraShape& s, std::span<float> w, std::span<const float> a, std::span<const float> b,
           float sign) {
  check_wab(k, s, w.size(), a.size(), b.size());
  MMap W(w.data(), ix(s.out), ix(s.in));
  W.noalias() += (sign * s.scale()) * (CMap(b.data(), ix(s.out), ix(s.rank)) * CMap(a.data(), ix(s.rank), ix(s.in)));
}
}  // namespace

namespace cpu {

void lora_forward(const LoraShape& s, std::span<const float> x, std::span<const float> w, std::span<const float> a,
                  std::span<const float> b, std::span<float> h, std::span<float> y) {
  check_wab("lora_forward", s, w.size(), a.size(), b.size());
  detail::require_size("lora_forward", "x", x.size(), "batch·in", s.batch * s.in);
  detail::require_size("lora_forward", "h", h.size(), "batch·rank", s.batch * s.rank);
  detail::require_size("lora_forward", "y", y.size(), "batch·out", s.batch * s.out);
  CMap X(x.data(), ix(s.batch), ix(s.in));
  MMap H(h.data(), ix(s.batch), ix(s.rank));
  MMap Y(y.data(), ix(s.batch), ix(s.out));
  H.noalias() = X * CMap(a.data(), ix(s.rank), ix(s.in)).transpose();
  Y.noalias() = X * CMap(w.data(), ix(s.out), ix(s.in)).transpose();
  Y.noalias() += s.scale() * (H * CMap(b.data(), ix(s.out), ix(s.rank)).transpose());
}

void lora_backward(const LoraShape& s, std::span<const float> x, std::span<const float> w, std::span<const float> a,
                   std::span<const float> b, std::span<const float> h, std::span<const float> dy, std::span<float> da,
                   std::span<float> db, std::span<float> dx) {
  check_wab("lora_backward", s, w.size(), a.size(), b.size());
  detail::require_size("lora_backward", "x", x.size(), "batch·in", s.batch * s.in);
  detail::require_size("lora_backward", "h", h.size(), "batch·rank", s.batch * s.rank);
  detail::require_size("lora_backward", "dy", dy.size(), "batch·out", s.batch * s.out);
  detail::require_size("lora_backward", "da", da.size(), "rank·in", s.rank * s.in);
  detail::require_size("lora_backward", "db", db.size(), "out·rank", s.out * s.rank);
  if (!dx.empty()) detail::require_size("lora_backward", "dx", dx.size(), "batch·in", s.batch * s.in);
  CMap X(x.data(), ix(s.batch), ix(s.in));
  CMap B(b.data(), ix(s.out), ix(s.rank));
  CMap dY(dy.data(), ix(s.batch), ix(s.out));
  MMap(db.data(), ix(s.out), ix(s.rank)).noalias() = s.scale() * (dY.transpose() * CMap(h.data(), ix(s.batch), ix(s.rank)));
  const RowMat dH = s.scale() * (dY * B);  // batch × rank: small
  MMap(da.data(), ix(s.rank), ix(s.in)).noalias() = dH.transpose() * X;
  if (!dx.empty()) {
    MMap dX(dx.data(), ix(s.batch), ix(s.in));
    dX.noalias() = dY * CMap(w.data(), ix(s.out), ix(s.in));
    dX.noalias() += dH * CMap(a.data(), ix(s.rank), ix(s.in));
  }
}

void lora_merge(const LoraShape& s, std::span<float> w, std::span<const float> a, std::span<const float> b) {
  merge("lora_merge", s, w, a, b, 1.0f);
}
void lora_unmerge(const LoraShape& s, std::span<float> w, std::span<const float> a, std::span<const float> b) {
  merge("lora_unmerge", s, w, a, b, -1.0f);
}

}  // namespace cpu
}  // namespace twinbed::kernels
