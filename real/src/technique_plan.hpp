// Internal to real/: which of a rank's ops are the technique passes' ops and how they hang together —
// found once, for every real backend (the CPU backend's technique_ops.hpp, the CUDA backend's
// plan_launch.hpp), which then run them each with its own kernels and buffers. Free of MPI and CUDA.
//
// Roles, by OpCost::kernel (core/model.hpp): Compress ("tgc.requantize": Requantize), Decompress,
// MaskRefresh (Refresh), MaskedStep, LossScale, Precision (Statistics), and SparseGemm for a matmul with
// DSA's Block or TwoFour sparsity (whether a backend can run it sparse is the backend's business).
// A TGC exchange is compress → collective → (requantize) → decompress: the collective is the one that
// depends on the compress op, the requantize and decompress ops the ones that depend on that collective
// (or on the requantize after it).
#pragma once

#include <cstdint>
#include <vector>

#include "twinbed/core/passes/tgc.hpp"
#include "twinbed/core/plan.hpp"

namespace twinbed::real::detail {

enum class TechniqueRole : std::uint8_t { None, Compress, Requantize, Decompress, Refresh, MaskedStep, LossScale, Statistics, SparseGemm };
// "none", "tgc.compress", "tgc.requantize", "tgc.decompress", "dsa.mask_refresh", "dsa.masked_step",
// "precision.loss_scale", "precision.statistics", "dsa.sparse_gemm".
const char* to_string(TechniqueRole r);

// One TGC exchange of the rank.
struct ExchangePlan {
  TgcParams params;                  // bits, topk_fraction, error_feedback, block_size of the compress op
  int bits = 0;                      // the width the payload is encoded at (0: fp32 values)
  std::int64_t n = 0;                // gradient elements
  std::uint32_t name = 0;            // the compress op's name: with the rank, the gradient's identity
  std::int32_t collective = -1;      // the op index of its collective
  CollectiveOp op = CollectiveOp::AllGather;
  std::vector<int> members;          // world ranks of the collective's group, in schedule order
  int me = 0;                        // this rank's position among them
  std::int64_t requantize_elements = 0;  // the requantize op's elements (the hops'), 0 when none
  bool operator==(const ExchangePlan&) const = default;
};

// DSA's state of the rank's program: the masks of `n` target parameters (all its DSA ops agree on n).
struct DsaPlan {
  bool present = false;
  std::int64_t n = 0;
  double density = 1;
  OpCost::Sparsity granularity = OpCost::Sparsity::Unstructured;  // the refresh's
  std::int64_t block = 0;
  int every = 1;                     // iterations per full refresh
  Bytes rest_bytes = 0;              // the masked step's other parameters (masked_step_rest_bytes)
  bool operator==(const DsaPlan&) const = default;
};

struct TechniquePlan {
  std::vector<TechniqueRole> role;   // per op
  std::vector<std::int32_t> exchange;  // per op: its exchange (TGC ops and an exchange's collective), else -1
  std::vector<ExchangePlan> exchanges;
  DsaPlan dsa;
  std::int64_t loss_scale_elements = 0;  // the largest loss-scale op's
  std::int64_t statistics_elements = 0;  // the largest statistics op's
};

// The technique ops of `rank`'s program. Throws InvalidArgument naming the op when a requantize or
// decompress op follows no compressed collective, or DSA ops of one program disagree on their count.
TechniquePlan plan_techniques(const Plan& plan, int rank);

}  // namespace twinbed::real::detail
