// Exact top-k by magnitude and the compaction it (and threshold sparsification) runs on.
//
// Top-k = sampled lower bound + one compaction pass + radix select over the candidates:
//   1. a stratified sample of 8192 keys gives a magnitude that, with a 3σ margin, at least k entries
//      reach (no bound for small n or large k: every entry is a candidate);
//   2. one streaming pass compacts the candidates (index and value, in index order);
//   3. a most-significant-digit radix select over the candidates' magnitude keys (31 bits as digits
//      of 11, 11 and 9 bits; each level histograms only the keys sharing the prefix found so far)
//      finds the exact k-th largest key and how many keys lie strictly above it;
//   4. one pass over the candidates keeps every key above the k-th and the lowest-index ties (the
//      DSA mask instead takes one vectorised pass over x with the k-th key and the last tie kept).
// Keys are IEEE bits with the sign cleared, monotone in |x| as unsigned integers (a NaN ranks above
// +inf), so no comparison is ever made in floating point. Cost: one read of x plus O(candidates),
// with no comparison sort anywhere.
#include "select.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <functional>
#include <memory>

#include "quant_math.hpp"
#include "simd.hpp"
#include "twinbed/kernels/rng.hpp"
#include "validate.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__)
#define TWINBED_AVX2_PATH 1
#include <immintrin.h>
#else
#define TWINBED_AVX2_PATH 0
#endif

namespace twinbed::kernels::detail {

std::vector<std::uint32_t> sample_keys(std::span<const float> x, std::size_t samples, std::uint64_t seed) {
  const std::size_t n = x.size();
  std::vector<std::uint32_t> keys(samples);
  const std::uint32_t key = rng::key(seed, 0);
  for (std::size_t j = 0; j < samples; ++j) {
    // Stratum j is [j·n/s, (j+1)·n/s): one draw inside each keeps the sample spread over the whole
    // tensor (gradients are spatially structured) while the addresses still increase monotonically.
    const std::size_t lo = j * n / samples;
    const std::size_t hi = (j + 1) * n / samples;
    const std::size_t pick = lo + rng::bits(key, j) % (hi - lo);
    keys[j] = magnitude_key(x[pick]);
  }
  return keys;
}

namespace {

// ---- compaction ------------------------------------------------------------------------------------

// Baseline path: SSE2 scan, walk the hit bits. With EF, acc = e + g is formed per L1-sized chunk.
template <bool EF>
std::size_t compact_scan(const float* x, const float* g, float* e, std::size_t n, std::uint32_t tkey,
                         std::uint32_t* idx, float* val, std::size_t cap) {
  std::size_t count = 0;
  constexpr std::size_t chunk = EF ? 2048 : ~std::size_t{0} / 2;
  for (std::size_t start = 0; start < n; start += chunk) {
    const std::size_t len = std::min(chunk, n - start);
    float* ec = nullptr;
    const float* src = x + start;
    if constexpr (EF) {
      ec = e + start;
      for (std::size_t i = 0; i < len; ++i) ec[i] += g[start + i];
      src = ec;
    }
    for_each_key_ge(src, len, tkey, [&](std::size_t i) {
      if (count < cap) {
        if (idx != nullptr) idx[count] = static_cast<std::uint32_t>(start + i);
        if (val != nullptr) val[count] = src[i];
        if constexpr (EF) ec[i] = 0.0f;
      }
      ++count;
    });
  }
  return count;
}

#if TWINBED_AVX2_PATH
// kPerm[m] holds, byte by byte, the lanes of the set bits of m in increasing order: the permutation
// that packs the selected lanes of an 8-lane vector to its front.
constexpr std::array<std::uint64_t, 256> make_perm_table() {
  std::array<std::uint64_t, 256> t{};
  for (unsigned m = 0; m < 256; ++m) {
    unsigned pos = 0;
    for (unsigned lane = 0; lane < 8; ++lane)
      if ((m >> lane) & 1U) t[m] |= std::uint64_t{lane} << (8 * pos++);
  }
  return t;
}
alignas(64) constexpr std::array<std::uint64_t, 256> kPerm = make_perm_table();

// AVX2 path. Every step stores 8 indices (and values) at the cursor whatever the mask, then advances
// the cursor by the number of hits: no branch depends on the data, so any density runs at the same
// speed. It runs while 8 more lanes fit under cap; the rest (tail, or output nearly full) is scalar.
template <bool EF>
__attribute__((target("avx2,popcnt"))) std::size_t compact_avx2(const float* x, const float* g, float* e,
                                                                 std::size_t n, std::uint32_t tkey,
                                                                 std::uint32_t* idx, float* val, std::size_t cap) {
  const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
  // key >= tkey  <=>  key > tkey - 1 as signed int32 (keys are < 2^31; tkey = 0 gives -1).
  const __m256i thr = _mm256_set1_epi32(static_cast<int>(tkey - 1U));
  const __m256i step = _mm256_set1_epi32(8);
  __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  std::size_t count = 0;
  std::size_t i = 0;
  for (; i + 8 <= n && count + 8 <= cap; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    if constexpr (EF) v = _mm256_add_ps(v, _mm256_loadu_ps(g + i));
    const __m256i hit = _mm256_cmpgt_epi32(_mm256_and_si256(_mm256_castps_si256(v), absmask), thr);
    const auto m = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(hit)));
    const __m256i perm = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(&kPerm[m])));
    if (idx != nullptr)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx + count), _mm256_permutevar8x32_epi32(lanes, perm));
    if (val != nullptr) _mm256_storeu_ps(val + count, _mm256_permutevar8x32_ps(v, perm));
    if constexpr (EF) _mm256_storeu_ps(e + i, _mm256_andnot_ps(_mm256_castsi256_ps(hit), v));
    count += static_cast<std::size_t>(__builtin_popcount(m));
    lanes = _mm256_add_epi32(lanes, step);
  }
  // Output nearly full: scalar until it is full (at most 7 more hits are written)...
  for (; i < n && count < cap; ++i) {
    float v = x[i];
    if constexpr (EF) v += g[i];
    if (magnitude_key(v) >= tkey) {
      if (idx != nullptr) idx[count] = static_cast<std::uint32_t>(i);
      if (val != nullptr) val[count] = v;
      v = 0.0f;
      ++count;
    }
    if constexpr (EF) e[i] = v;
  }
  // ...then only counted (and, with EF, accumulated), 8 lanes at a time.
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    if constexpr (EF) v = _mm256_add_ps(v, _mm256_loadu_ps(g + i));
    const __m256i hit = _mm256_cmpgt_epi32(_mm256_and_si256(_mm256_castps_si256(v), absmask), thr);
    const auto m = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(hit)));
    count += static_cast<std::size_t>(__builtin_popcount(m));
    if constexpr (EF) _mm256_storeu_ps(e + i, v);
  }
  for (; i < n; ++i) {
    float v = x[i];
    if constexpr (EF) v += g[i];
    count += magnitude_key(v) >= tkey ? 1 : 0;
    if constexpr (EF) e[i] = v;
  }
  return count;
}

bool have_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
  return yes;
}

// Step 4 of top-k, 8 candidates a step: keep key > kth, or key == kth at an index <= last_tie,
// packed with the same permutation table. Writes exactly k outputs (the vector steps run while 8
// more fit). Returns how many candidates were consumed by the vector steps and the outputs so far.
__attribute__((target("avx2,popcnt"))) std::size_t keep_avx2(const std::uint32_t* cidx, const float* cval,
                                                              std::size_t m, std::uint32_t kth,
                                                              std::uint32_t last_tie, std::uint32_t* idx,
                                                              float* val, std::size_t k, std::size_t& out) {
  const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
  const __m256i kv = _mm256_set1_epi32(static_cast<int>(kth));
  const __m256i flip = _mm256_set1_epi32(static_cast<int>(0x80000000U));
  const __m256i lt = _mm256_xor_si256(_mm256_set1_epi32(static_cast<int>(last_tie)), flip);
  std::size_t j = 0;
  for (; j + 8 <= m && out + 8 <= k; j += 8) {
    const __m256 v = _mm256_loadu_ps(cval + j);
    const __m256i ix = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cidx + j));
    const __m256i key = _mm256_and_si256(_mm256_castps_si256(v), absmask);
    // Unsigned index <= last_tie as a signed compare after flipping the top bit (keys are < 2^31).
    const __m256i tie_ok = _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_xor_si256(ix, flip), lt),
                                               _mm256_cmpeq_epi32(key, kv));
    const __m256i take = _mm256_or_si256(_mm256_cmpgt_epi32(key, kv), tie_ok);
    const auto msk = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(take)));
    const __m256i perm = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(&kPerm[msk])));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx + out), _mm256_permutevar8x32_epi32(ix, perm));
    if (val != nullptr) _mm256_storeu_ps(val + out, _mm256_permutevar8x32_ps(v, perm));
    out += static_cast<std::size_t>(__builtin_popcount(msk));
  }
  return j;
}
#endif

// ---- candidate scratch -----------------------------------------------------------------------------

// The candidate buffers, kept per thread between calls and grown to the largest candidate set seen.
// A large top-k's candidates are megabytes; fresh memory on every call (glibc maps and unmaps such
// sizes each time) cost as much in page faults as the selection itself. Per thread, so the kernels
// stay re-entrant and thread-safe; the memory (8 bytes per candidate) lives until the thread ends.
struct CandidateScratch {
  std::unique_ptr<std::uint32_t[]> idx;
  std::unique_ptr<float[]> val;
  std::size_t capacity = 0;

  void reserve(std::size_t n) {
    if (n <= capacity) return;
    idx.reset();  // release before allocating, so the peak is not old + new
    val.reset();
    idx = std::make_unique_for_overwrite<std::uint32_t[]>(n);
    val = std::make_unique_for_overwrite<float[]>(n);
    capacity = n;
  }
};

CandidateScratch& candidate_scratch() {
  thread_local CandidateScratch s;
  return s;
}

// ---- radix select ----------------------------------------------------------------------------------

struct Kth {
  std::uint32_t key = 0;   // the k-th largest key
  std::size_t above = 0;   // keys strictly greater than it
  std::size_t equal = 0;   // keys equal to it
};

// Digit d (0 = most significant) of a 31-bit key: 11, 11 and 9 bits.
constexpr int kDigitShift[3] = {20, 9, 0};
constexpr std::uint32_t kDigitMask[3] = {0x7ffU, 0x7ffU, 0x1ffU};

// The k-th largest (1 <= k <= m) of the magnitude keys of vals[0..m). Level 0 histograms all m keys
// (four interleaved histograms, so runs of equal digits do not serialise on one counter); each later
// level histograms only the keys whose higher digits equal the boundary found so far, gathered into
// a buffer that shrinks with every level.
Kth radix_kth(const float* vals, std::size_t m, std::size_t k) {
  Kth r;
  std::vector<std::uint32_t> keep;  // keys that share the prefix, for levels 1 and 2
  std::uint32_t prefix = 0;
  std::size_t rem = k;  // rank still to find, counted from the top of the current prefix
  for (int level = 0; level < 3; ++level) {
    const int shift = kDigitShift[level];
    const std::uint32_t dmask = kDigitMask[level];
    std::array<std::array<std::uint32_t, 2048>, 4> h{};
    if (level == 0) {
      std::size_t j = 0;
      for (; j + 4 <= m; j += 4)
        for (std::size_t t = 0; t < 4; ++t) ++h[t][magnitude_key(vals[j + t]) >> shift];
      for (; j < m; ++j) ++h[0][magnitude_key(vals[j]) >> shift];
    } else {
      for (std::uint32_t key : keep) ++h[0][(key >> shift) & dmask];
    }
    // The boundary digit: walk down from the largest until the running count reaches rem.
    std::uint32_t b = dmask;
    std::size_t cum = 0;
    for (;; --b) {
      const std::size_t c = std::size_t{h[0][b]} + h[1][b] + h[2][b] + h[3][b];
      if (cum + c >= rem) break;
      cum += c;
    }
    r.above += cum;
    rem -= cum;
    prefix |= b << shift;
    if (level == 2) {  // the last digit: the bucket holds exactly the keys equal to the k-th
      r.equal = std::size_t{h[0][b]} + h[1][b] + h[2][b] + h[3][b];
      break;
    }
    // Keys sharing the new prefix (branch-free: write always, advance on a match).
    const int next_shift = shift;  // digits above and at this level must match
    const std::uint32_t want = prefix >> next_shift;
    std::size_t w = 0;
    if (level == 0) {
      keep.resize(std::size_t{h[0][b]} + h[1][b] + h[2][b] + h[3][b] + 1);
      for (std::size_t j = 0; j < m; ++j) {
        const std::uint32_t key = magnitude_key(vals[j]);
        keep[w] = key;
        w += (key >> next_shift) == want ? 1 : 0;
      }
    } else {
      for (std::size_t j = 0; j < keep.size(); ++j) {
        const std::uint32_t key = keep[j];
        keep[w] = key;
        w += (key >> next_shift) == want ? 1 : 0;
      }
    }
    keep.resize(w);
  }
  r.key = prefix;
  return r;
}

}  // namespace

std::size_t compact_ge(const float* x, std::size_t n, std::uint32_t tkey, std::uint32_t* idx, float* val,
                       std::size_t cap) {
#if TWINBED_AVX2_PATH
  if (have_avx2()) return compact_avx2<false>(x, nullptr, nullptr, n, tkey, idx, val, cap);
#endif
  return compact_scan<false>(x, nullptr, nullptr, n, tkey, idx, val, cap);
}

std::size_t ef_compact_ge(const float* g, float* e, std::size_t n, std::uint32_t tkey, std::uint32_t* idx,
                          float* val, std::size_t cap) {
#if TWINBED_AVX2_PATH
  if (have_avx2()) return compact_avx2<true>(e, g, e, n, tkey, idx, val, cap);
#endif
  return compact_scan<true>(e, g, e, n, tkey, idx, val, cap);
}

namespace {

// Steps 1-3 for 1 <= k < n: the candidates (in the thread's scratch; their indices only when
// want_indices), the k-th largest key, and the index of the last tie that the lower-index rule keeps.
struct Selection {
  const std::uint32_t* cidx = nullptr;
  const float* cval = nullptr;
  std::size_t m = 0;        // candidates
  Kth kth;
  std::size_t ties = 0;     // entries equal to the k-th key that are kept (k - kth.above >= 1)
  std::uint32_t last_tie = 0;
};

Selection select_candidates(std::span<const float> x, std::size_t k, bool want_indices) {
  const std::size_t n = x.size();
  // Step 1: a lower bound on the k-th largest key from a stratified sample (rank with a 3σ margin),
  // and room for the candidates it should admit (with more margin; a shortfall only costs a redo).
  std::uint32_t bound = 0;
  std::size_t cap = n;
  const std::size_t s = topk_sample_count(n);
  const std::size_t rank = topk_sample_rank(n, k, s);
  if (s < n && rank <= s) {
    std::vector<std::uint32_t> keys = sample_keys(x, s, 0x746f706bULL);
    std::nth_element(keys.begin(), keys.begin() + static_cast<std::ptrdiff_t>(rank - 1), keys.end(),
                     std::greater<>());
    bound = keys[rank - 1];
    const double r = static_cast<double>(rank);
    cap = std::min(n, static_cast<std::size_t>((r + 4.0 * std::sqrt(r) + 16.0) * static_cast<double>(n) /
                                               static_cast<double>(s)) + 64);
  }
  // Step 2: one streaming pass compacts the candidates (key >= bound), in index order.
  CandidateScratch& cs = candidate_scratch();
  cs.reserve(cap);
  auto cidx = [&] { return want_indices ? cs.idx.get() : nullptr; };
  std::size_t m = compact_ge(x.data(), n, bound, cidx(), cs.val.get(), cap);
  if (m > cap) {  // more candidates than room (a skewed tensor): redo with room for all of them
    cs.reserve(m);
    compact_ge(x.data(), n, bound, cidx(), cs.val.get(), m);
  }
  if (m < k) {  // the sample overshot (rare): every element is a candidate
    cs.reserve(n);
    m = compact_ge(x.data(), n, 0, cidx(), cs.val.get(), n);
  }
  Selection sel;
  sel.cidx = cidx();
  sel.cval = cs.val.get();
  sel.m = m;
  // Step 3: the exact k-th largest key among the candidates, and the last tie kept.
  sel.kth = radix_kth(sel.cval, m, k);
  sel.ties = k - sel.kth.above;
  if (sel.kth.equal == sel.ties) {  // every tie is kept (the usual case for real-valued scores)
    sel.last_tie = ~std::uint32_t{0};
  } else if (want_indices) {
    for (std::size_t j = 0, seen = 0;; ++j)
      if (magnitude_key(sel.cval[j]) == sel.kth.key && ++seen == sel.ties) {
        sel.last_tie = sel.cidx[j];
        break;
      }
  } else {  // many ties and no candidate indices: find the last kept tie in x itself
    for (std::size_t i = 0, seen = 0;; ++i)
      if (magnitude_key(x[i]) == sel.kth.key && ++seen == sel.ties) {
        sel.last_tie = static_cast<std::uint32_t>(i);
        break;
      }
  }
  return sel;
}

// mask[i] = 1 for the selected entries: key above the k-th, or equal to it at an index up to the
// last tie kept. One vectorised pass (read 4 bytes, write 1 per element).
TWINBED_CLONES void write_mask(const float* x, std::uint32_t n, std::uint32_t kth, std::uint32_t last_tie,
                               std::uint8_t* mask) {
  for (std::uint32_t i = 0; i < n; ++i) {
    const std::uint32_t key = magnitude_key(x[i]);
    mask[i] = static_cast<std::uint8_t>((key > kth) | ((key == kth) & (i <= last_tie)));
  }
}

}  // namespace

void select_topk(std::span<const float> x, std::size_t k, std::uint32_t* idx, float* val) {
  const std::size_t n = x.size();
  if (k == 0) return;
  if (k == n) {
    for (std::size_t i = 0; i < n; ++i) idx[i] = static_cast<std::uint32_t>(i);
    if (val != nullptr) std::copy(x.begin(), x.end(), val);
    return;
  }
  const Selection sel = select_candidates(x, k, true);
  // Step 4: keep everything above the k-th key and the ties up to the last one kept, in index
  // order (8 candidates a step with AVX2, then scalar). The output slot is written unconditionally
  // and the cursor advanced on a keep; the loop stops once k are kept, so no write lands past idx[k - 1].
  std::size_t out = 0;
  std::size_t j = 0;
#if TWINBED_AVX2_PATH
  if (have_avx2()) j = keep_avx2(sel.cidx, sel.cval, sel.m, sel.kth.key, sel.last_tie, idx, val, k, out);
#endif
  for (; out < k; ++j) {
    const std::uint32_t key = magnitude_key(sel.cval[j]);
    const bool take = key > sel.kth.key || (key == sel.kth.key && sel.cidx[j] <= sel.last_tie);
    idx[out] = sel.cidx[j];
    if (val != nullptr) val[out] = sel.cval[j];
    out += take ? 1 : 0;
  }
}

void select_topk_mask(std::span<const float> x, std::size_t k, std::uint8_t* mask) {
  const std::size_t n = x.size();
  if (k == 0 || k == n) {
    std::fill(mask, mask + n, static_cast<std::uint8_t>(k == n ? 1 : 0));
    return;
  }
  const Selection sel = select_candidates(x, k, false);  // values only: the mask pass re-reads x
  write_mask(x.data(), static_cast<std::uint32_t>(n), sel.kth.key, sel.last_tie, mask);
}

std::vector<std::uint32_t> select_topk(std::span<const float> x, std::size_t k) {
  std::vector<std::uint32_t> result(k);
  select_topk(x, k, result.data(), nullptr);
  return result;
}

}  // namespace twinbed::kernels::detail
