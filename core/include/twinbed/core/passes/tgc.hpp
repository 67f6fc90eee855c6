// TGC — three-level gradient compression (seed 004, claims TGC-AR, GC-4NODE, ZERO3-70B) as a Plan pass:
// quantisation (fixed or adaptive width), top-k sparsification and error feedback on the data-parallel
// gradient reduction, with the payload formats and sizes of kernels/…/tgc.hpp and payload.hpp.
//
//   {"pass": "tgc", "bits": 4, "topk_fraction": 0.01, "error_feedback": true, "hierarchy": "hierarchical"}
//
// bits: 2, 4, 8, 16, "adaptive" or "none" (default: values unquantised); adaptive_bits: 4, 8 or 16, the
// width the adaptive rule is assumed to pick (default 8: the simulator sees no gradient values — a
// stated input, which the real backend measures); adaptive_tolerance: the relative RMS error per block
// the adaptive rule allows when it sees real gradients (kernels' choose_bits; default 0.05, a setting,
// not a measured constant: it gives 8 bits to blocks of Gaussian-like values, crest factor 3–4, and
// 16 to heavy-tailed ones with crest above 22; only `twinbed train` applies it); block_size: elements per quantisation scale, a
// positive multiple of 8 (default 256, the kernels' default); topk_fraction in (0, 1] (default 1: dense);
// error_feedback (default true); hierarchy: "flat" (default) or "hierarchical". bits "none" with
// topk_fraction 1 is the neutral setting: the plan is left unchanged.
//
// What it changes: every gradient reduction over dp or expert-dp (collectives with tensor class Grads:
// the final buckets, all-reduce or ZeRO-1/2 reduce-scatter, and ZeRO-3's per-layer reduce-scatters) of
// n elements becomes, on the collective stream:
//   compress (kernel Compress)  reads the gradient (its dtype's bytes per element), with error feedback
//                               reads and writes the fp32 residual (8 B), with top-k makes one more fp32
//                               pass to select (4 B), with adaptive width one to choose it (4 B), and
//                               writes the payload P:
//                                 quantised only   quant_payload_bytes(n) (codes + a 4 B scale per block)
//                                 top-k k = ⌈f·n⌉  sparse_payload_bytes(k) = 8k, or 4k +
//                                                  quant_payload_bytes(k) with quantised values
//   the collective on P         quantised only: the same collective on P bytes — a quantised payload can
//                               be reduced hop by hop; the decode-add-encode of each hop is a Compress op
//                               after it (R ranks: (R−1)/R·n elements, 8 B of fp32 accumulator each and
//                               2·(R−1)/R·P of codes), serialised after the transfer — an upper bound of
//                               what a pipelined implementation exposes.
//                               top-k: (index, value) pairs cannot be summed in place: an all-gather of
//                               every rank's payload, R·P bytes, so the volume each rank receives grows
//                               with R (a dense ring's does not).
//   decompress (kernel Decompress) reads the payload(s) it holds (P, or R·P after an all-gather) and
//                               writes the gradient (n, or n/R for a reduce-scatter, × gradient bytes).
// "hierarchical": when every host holds L > 1 of a dp group's ranks and there are H > 1 hosts, a dense
// reduce-scatter over the L ranks of the host (DpIntra) comes first, the compressed exchange above runs
// on each rank's n/L shard over the H hosts (DpInter), and an all-reduce's result is all-gathered within
// the host again (a reduce-scatter's is already the rank's shard); otherwise it is flat.
// Memory: the payload buffers (CommBuffer) around each exchange; with error feedback and lossy
// compression the fp32 residual of every compressed element (4 B; n/L of each with the hierarchy),
// held for the whole run (TechniqueState).
// Never assumed: that the compression ratio becomes a speedup. The simulator times what is sent.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "twinbed/core/plan.hpp"

namespace twinbed {

struct TgcParams {
  enum class Hierarchy { Flat, Hierarchical };
  int bits = 0;                // 0: values unquantised; else 2, 4, 8 or 16
  bool adaptive = false;       // bits chosen by the adaptive rule: adaptive_bits assumed
  int adaptive_bits = 8;
  std::int64_t block_size = 256;
  double topk_fraction = 1;
  bool error_feedback = true;
  Hierarchy hierarchy = Hierarchy::Flat;
  double adaptive_tolerance = 0.05;  // `twinbed train` only: choose_bits' rel_tol
  bool lossless() const { return bits == 0 && !adaptive && topk_fraction >= 1; }
  // The quantisation width in effect: bits, adaptive_bits, or 0.
  int width() const { return adaptive ? adaptive_bits : bits; }
  bool operator==(const TgcParams&) const = default;
};

TgcParams tgc_params_from_json(const nlohmann::json& entry, const std::string& path);
nlohmann::json tgc_params_to_json(const TgcParams& p);
void apply_tgc(Plan& plan, const TgcParams& p);

// The payload a rank sends for n gradient elements: the exact sizes of payload.hpp.
Bytes tgc_payload_bytes(std::int64_t n, const TgcParams& p);

}  // namespace twinbed
