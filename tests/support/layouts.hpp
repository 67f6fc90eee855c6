// Layouts the tests build plans for (test support, not part of twinbed).
#pragma once

#include "twinbed/core/layout.hpp"

namespace twinbed::test_support {

// dp × tp × pp ranks, micro-batch 1, `micro_batches` micro-batches per step; every other field default.
inline Layout layout3d(int dp, int tp, int pp, int micro_batches) {
  Layout l;
  l.dp = dp;
  l.tp = tp;
  l.pp = pp;
  l.global_batch = dp * micro_batches;
  return l;
}

}  // namespace twinbed::test_support
