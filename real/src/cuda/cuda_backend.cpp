// The CUDA Plan backend (cuda_backend.hpp): executes what plan_launch.hpp planned. This file says why.
// The technique ops (run_technique) mirror real/src/cpu/technique_ops.cpp with the kernels' CUDA twins;
// never run on a GPU yet.
#include "twinbed/real/cuda_backend.hpp"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "../cpu/technique_ops.hpp"  // fill_gradient_like: the CPU backend's synthetic gradients
#include "device.hpp"
#include "device_kernels.hpp"
#include "nccl_common.hpp"
#include "plan_launch.hpp"
#include "../trace_packing.hpp"
#include "twinbed/core/collective_algorithms.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/hash.hpp"
#include "twinbed/core/plan_exec.hpp"
#include "twinbed/kernels/cuda_context.hpp"
#include "twinbed/kernels/dsa.hpp"
#include "twinbed/kernels/sparse_gemm.hpp"
#include "twinbed/kernels/tgc.hpp"
#include "twinbed/real/tgc_codec.hpp"
#include "twinbed/real/collective_data.hpp"
#include "twinbed/real/cuda_check.hpp"

namespace twinbed::real {
namespace {

using cuda_detail::CublasHandle;
using cuda_detail::DeviceArray;
using cuda_detail::Event;
using cuda_detail::GpuProgram;
using cuda_detail::Job;
using cuda_detail::LaunchPlan;
using cuda_detail::NcclComm;
using cuda_detail::NcclGroup;
using cuda_detail::OpLaunch;
using cuda_detail::Stream;

std::pair<cudaDataType_t, cublasComputeType_t> cublas_types(DType dtype) {
  switch (dtype) {
    case DType::FP32: return {CUDA_R_32F, CUBLAS_COMPUTE_32F};
    case DType::TF32: return {CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_TF32};
    case DType::BF16: return {CUDA_R_16BF, CUBLAS_COMPUTE_32F};
    case DType::FP16: return {CUDA_R_16F, CUBLAS_COMPUTE_32F};
    case DType::FP8: break;  // gemm_dtype never gives it
  }
  throw InvalidArgument("CUDA backend: no cuBLAS GEMM for dtype " + dtype_name(dtype));
}

// 16-byte aligned offsets inside one pool.
Bytes align16(Bytes b) { return (b + 15) / 16 * 16; }


// ---- technique ops on the GPU: technique_ops.cpp's roles with the kernels' CUDA twins ----------------

namespace kcu = twinbed::kernels::cuda;
using detail::TechniqueRole;
using cuda_detail::TgcExchange;

// The CPU backend's seeds (technique_ops.cpp), so that the same (rank, name, n) is the same gradient.
std::uint64_t seed_of(int world_rank, std::uint32_t name, std::int64_t salt) {
  return hash_combine(hash_combine(hash_combine(0x7467635f65786368ULL, static_cast<std::uint64_t>(world_rank)), name),
                      static_cast<std::uint64_t>(salt));
}

// Gradient-like values made on the host once (the CPU backend's fill) and copied to the device.
template <typename T>
void upload(DeviceArray<T>& d, const std::vector<T>& h) {
  if (!h.empty()) CUDA_CHECK(cudaMemcpy(d.data(), h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
}
DeviceArray<float> gradient_like(std::size_t n, std::uint64_t seed) {
  std::vector<float> h(n);
  detail::fill_gradient_like(h, seed);
  DeviceArray<float> d(n);
  upload(d, h);
  return d;
}
template <typename T>
std::span<T> whole(DeviceArray<T>& a) { return {a.data(), a.size()}; }
template <typename T>
std::span<const T> whole_c(const DeviceArray<T>& a) { return {a.data(), a.size()}; }
kernels::QuantSpec spec_of(const TgcExchange& e) {
  return {e.params.bits == 0 ? 8 : e.params.bits, static_cast<std::size_t>(e.params.block_size)};
}
void copy_async(void* dst, const void* src, std::size_t bytes, cudaStream_t s) {
  if (bytes > 0) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s));
}

struct DeviceExchange {
  DeviceArray<float> gradient, residual, payload, output, sum, values, decoded, scales;
  DeviceArray<std::uint32_t> index;
  DeviceArray<std::uint8_t> codes;
  DeviceArray<float> hop_values, hop_scales, hop_out_scales;
  DeviceArray<std::uint8_t> hop_codes, hop_out_codes;
  bool verified = false;
};

struct DeviceSparseGemm {
  DeviceArray<float> x, y, values;
  DeviceArray<std::uint32_t> row_ptr, col_idx;
  DeviceArray<std::uint8_t> columns;
  std::size_t rows = 0, cols = 0;
};

// The state technique_ops.hpp keeps, in device memory, made once per run() and kept over its iterations.
struct DeviceTechniques {
  std::vector<DeviceExchange> exchanges;
  DeviceArray<float> grad, momentum, score, params, v;  // DSA
  DeviceArray<std::uint8_t> mask, block_mask;
  std::vector<DeviceSparseGemm> gemms;
  DeviceArray<float> loss_in, loss_out, stats, stats_out;
  DeviceArray<int> overflow;
  std::int64_t iteration = 0;
  PayloadCheck check;
};

void make_techniques(const LaunchPlan& lp, int rank, DeviceTechniques& t, kcu::Context& ctx) {
  for (const TgcExchange& e : lp.exchanges) {
    DeviceExchange d;
    const auto n = static_cast<std::size_t>(e.n), k = static_cast<std::size_t>(e.kept);
    d.gradient = gradient_like(n, seed_of(rank, e.name, e.n));
    if (e.params.error_feedback) {
      d.residual = DeviceArray<float>(n);
      CUDA_CHECK(cudaMemset(d.residual.data(), 0, d.residual.bytes()));
    }
    d.payload = DeviceArray<float>(static_cast<std::size_t>(e.payload_floats));
    d.output = DeviceArray<float>(static_cast<std::size_t>(e.output_floats()));
    CUDA_CHECK(cudaMemset(d.payload.data(), 0, d.payload.bytes()));
    CUDA_CHECK(cudaMemset(d.output.data(), 0, d.output.bytes()));
    d.sum = DeviceArray<float>(n);
    d.index = DeviceArray<std::uint32_t>(e.sparse() ? k : 0);
    d.values = DeviceArray<float>(e.sparse() ? k : 0);
    d.decoded = DeviceArray<float>(k);
    const kernels::QuantSpec spec = spec_of(e);
    if (e.params.bits) {
      d.codes = DeviceArray<std::uint8_t>(kernels::quant_code_bytes(k, spec.bits));
      d.scales = DeviceArray<float>(kernels::quant_num_blocks(k, spec));
    }
    if (e.hop > 0) {
      const auto hop = static_cast<std::size_t>(e.hop);
      d.hop_values = gradient_like(hop, seed_of(rank, e.name, -1));
      d.hop_codes = DeviceArray<std::uint8_t>(kernels::quant_code_bytes(hop, spec.bits));
      d.hop_scales = DeviceArray<float>(kernels::quant_num_blocks(hop, spec));
      d.hop_out_codes = DeviceArray<std::uint8_t>(d.hop_codes.size());
      d.hop_out_scales = DeviceArray<float>(d.hop_scales.size());
      kcu::quantize(whole_c(d.hop_values), spec, whole(d.hop_codes), whole(d.hop_scales), ctx);
    }
    t.exchanges.push_back(std::move(d));
  }
  if (lp.dsa.present) {
    const auto n = static_cast<std::size_t>(lp.dsa.n);
    t.grad = gradient_like(n, seed_of(rank, 0, 17));
    t.momentum = gradient_like(n, seed_of(rank, 1, 17));
    t.params = gradient_like(n, seed_of(rank, 2, 17));
    upload(t.v = DeviceArray<float>(n), std::vector<float>(n, 1e-4f));
    t.score = DeviceArray<float>(n);
    t.mask = DeviceArray<std::uint8_t>(n);
    const std::size_t b = static_cast<std::size_t>(std::max<std::int64_t>(lp.dsa.block, 1));
    t.block_mask = DeviceArray<std::uint8_t>(n / (b * b) + 1);
    if (n > 0) {  // the masks before the first refresh: the top `density` of the initial importance
      kcu::importance(whole_c(t.grad), whole_c(t.momentum), 0.5f, whole(t.score), ctx);
      kcu::mask_unstructured(whole_c(t.score), lp.dsa.density, whole(t.mask), ctx);
    }
  }
  for (const cuda_detail::SparseGemmLaunch& g : lp.sparse_gemms) {
    DeviceSparseGemm d;
    const auto m = static_cast<std::size_t>(g.m), n = static_cast<std::size_t>(g.n), k = static_cast<std::size_t>(g.k);
    d.x = gradient_like(m * k, seed_of(rank, 1, g.m));
    d.y = DeviceArray<float>(m * n);
    std::vector<float> w(n * k);
    detail::fill_gradient_like(w, seed_of(rank, 2, g.n));
    d.rows = n;
    d.cols = k;
    if (g.two_four) {
      const kernels::Sparse24Matrix s24 = kernels::prune_24(w, n, k);
      upload(d.values = DeviceArray<float>(s24.values.size()), s24.values);
      upload(d.columns = DeviceArray<std::uint8_t>(s24.columns.size()), s24.columns);
    } else {
      const auto b = static_cast<std::size_t>(g.block);
      std::vector<float> score(w.size());
      for (std::size_t j = 0; j < w.size(); ++j) score[j] = std::abs(w[j]);
      std::vector<std::uint8_t> block_mask((n / b) * (k / b)), mask(w.size());
      kernels::cpu::mask_block(score, n, k, b, g.density, block_mask, mask);
      const kernels::BsrMatrix bsr = kernels::bsr_from_dense(w, n, k, b, block_mask);
      upload(d.row_ptr = DeviceArray<std::uint32_t>(bsr.row_ptr.size()), bsr.row_ptr);
      upload(d.col_idx = DeviceArray<std::uint32_t>(bsr.col_idx.size()), bsr.col_idx);
      upload(d.values = DeviceArray<float>(bsr.values.size()), bsr.values);
    }
    t.gemms.push_back(std::move(d));
  }
  if (lp.loss_scale_elements > 0) {
    t.loss_in = gradient_like(static_cast<std::size_t>(lp.loss_scale_elements), seed_of(rank, 0, 65536));
    t.loss_out = DeviceArray<float>(static_cast<std::size_t>(lp.loss_scale_elements));
  }
  if (lp.statistics_elements > 0) t.stats = gradient_like(static_cast<std::size_t>(lp.statistics_elements), seed_of(rank, 0, 3));
  t.stats_out = DeviceArray<float>(2);
  t.overflow = DeviceArray<int>(1);
  CUDA_CHECK(cudaMemset(t.overflow.data(), 0, sizeof(int)));
  ctx.synchronize();
}

// real::TgcCodec::encode on the device: acc = g + residual; top-k; quantise; the residual keeps what was
// not delivered; packed [indices] [codes + scales, or fp32 values], zero padding.
void tgc_encode(const TgcExchange& e, DeviceExchange& d, kcu::Context& ctx) {
  const cudaStream_t s = ctx.stream();
  const kernels::QuantSpec spec = spec_of(e);
  const auto n = static_cast<std::size_t>(e.n), k = static_cast<std::size_t>(e.kept);
  std::span<const float> acc = whole_c(d.gradient);
  if (e.params.error_feedback) {
    kcu::ef_accumulate(whole_c(d.gradient), whole(d.residual), ctx);
    acc = whole_c(d.residual);
  }
  // The adaptive rule over what is about to be encoded (as TgcCodec::choose_bits: g + residual); the
  // payload keeps the width the plan assumed.
  if (e.params.adaptive)
    static_cast<void>(kcu::choose_bits(acc, static_cast<std::size_t>(e.params.block_size),
                                       static_cast<float>(e.params.adaptive_tolerance), ctx));  // synchronises
  std::span<const float> sent = acc;
  if (e.sparse()) {
    kcu::topk(acc, k, whole(d.index), whole(d.values), ctx);  // synchronises the stream
    if (e.params.error_feedback) kcu::ef_clear_sent(whole_c(d.index), whole(d.residual), ctx);
    sent = whole_c(d.values);
  }
  const float minus_one = -1.0f;
  if (e.params.bits) {
    kcu::quantize(sent, spec, whole(d.codes), whole(d.scales), ctx);
    if (e.params.error_feedback) {
      kcu::dequantize(whole_c(d.codes), whole_c(d.scales), spec, whole(d.decoded), ctx);
      if (e.sparse()) {
        // values ← values − decoded (what quantising lost), then added back into the residual.
        CUBLAS_CHECK(cublasSaxpy(ctx.cublas(), static_cast<int>(k), &minus_one, d.decoded.data(), 1, d.values.data(), 1));
        kcu::scatter_add(whole_c(d.index), whole_c(d.values), whole(d.residual), ctx);
      } else {
        CUBLAS_CHECK(cublasSaxpy(ctx.cublas(), static_cast<int>(n), &minus_one, d.decoded.data(), 1, d.residual.data(), 1));
      }
    }
  }
  auto* out = reinterpret_cast<std::byte*>(d.payload.data());
  CUDA_CHECK(cudaMemsetAsync(out, 0, d.payload.bytes(), s));
  if (e.sparse()) {
    copy_async(out, d.index.data(), 4 * k, s);
    out += 4 * k;
  }
  if (e.params.bits) {
    copy_async(out, d.codes.data(), d.codes.size(), s);
    copy_async(out + d.codes.size(), d.scales.data(), d.scales.bytes(), s);
  } else {
    copy_async(out, sent.data(), sent.size_bytes(), s);
  }
}

// sum += decode(payload): TgcCodec::decode_add on the device. Codes are read in place; the scales follow
// the codes at any byte offset, so they are copied to an aligned buffer first.
void tgc_decode_add(const TgcExchange& e, DeviceExchange& d, const float* payload, kcu::Context& ctx) {
  const kernels::QuantSpec spec = spec_of(e);
  const auto n = static_cast<std::size_t>(e.n), k = static_cast<std::size_t>(e.kept);
  const auto* in = reinterpret_cast<const std::byte*>(payload);
  std::span<const std::uint32_t> index;
  if (e.sparse()) {
    index = {reinterpret_cast<const std::uint32_t*>(in), k};
    in += 4 * k;
  }
  std::span<const float> decoded;
  if (e.params.bits) {
    const std::span<const std::uint8_t> codes{reinterpret_cast<const std::uint8_t*>(in), d.codes.size()};
    copy_async(d.scales.data(), in + d.codes.size(), d.scales.bytes(), ctx.stream());
    kcu::dequantize(codes, whole_c(d.scales), spec, whole(d.decoded), ctx);
    decoded = whole_c(d.decoded);
  } else {
    decoded = {reinterpret_cast<const float*>(in), k};
  }
  if (e.sparse()) kcu::scatter_add(index, decoded, whole(d.sum), ctx);
  else CUDA_CHECK(cuda_kernels::add_f32(d.sum.data(), decoded.data(), static_cast<std::int64_t>(n), ctx.stream()));
}

// technique_ops.cpp's refresh_masks over one slice, with the twins.
void refresh_slice(const cuda_detail::DsaLaunch& dsa, DeviceTechniques& t, std::size_t at, std::size_t len, kcu::Context& ctx) {
  const auto block = static_cast<std::size_t>(dsa.block);
  const bool blocks = dsa.granularity == OpCost::Sparsity::Block && block > 0 && len >= block * block;
  if (blocks) len = len / (block * block) * (block * block);
  if (dsa.granularity == OpCost::Sparsity::TwoFour) len = len / 4 * 4;
  if (len == 0) return;
  const std::span<float> score{t.score.data() + at, len};
  const std::span<std::uint8_t> mask{t.mask.data() + at, len};
  kcu::importance({t.grad.data() + at, len}, {t.momentum.data() + at, len}, 0.5f, score, ctx);
  if (blocks) {
    const std::size_t rows = len / block;
    kcu::mask_block(score, rows, block, block, dsa.density, {t.block_mask.data(), rows / block}, mask, ctx);
  } else if (dsa.granularity == OpCost::Sparsity::TwoFour) {
    kcu::mask_nm(score, len / 4, 4, 2, 4, mask, ctx);
  } else {
    kcu::mask_unstructured(score, dsa.density, mask, ctx);
  }
}

// Every member's first payload, re-encoded on the host from its gradient with a fresh residual, against
// what the all-gather delivered (copied back once): technique_ops.cpp's verify.
void verify_exchange(const TgcExchange& e, DeviceExchange& d, PayloadCheck& check, const std::string& name) {
  std::vector<float> got(d.output.size());
  CUDA_CHECK(cudaMemcpy(got.data(), d.output.data(), d.output.bytes(), cudaMemcpyDeviceToHost));
  const auto n = static_cast<std::size_t>(e.n), pf = static_cast<std::size_t>(e.payload_floats);
  std::vector<float> g(n), expected(pf);
  std::int64_t wrong = 0;
  // The communicator's ranks follow the members' world ranks ascending (ncclCommSplit's key).
  std::vector<int> by_comm_rank = e.members;
  std::sort(by_comm_rank.begin(), by_comm_rank.end());
  for (std::size_t r = 0; r < by_comm_rank.size(); ++r) {
    TgcCodec fresh(e.params, n);
    detail::fill_gradient_like(g, seed_of(by_comm_rank[r], e.name, e.n));
    fresh.encode(g, e.params.bits, expected);
    for (std::size_t i = 0; i < pf; ++i)
      if (std::memcmp(&expected[i], &got[r * pf + i], sizeof(float)) != 0) ++wrong;
    check.floats += static_cast<std::int64_t>(pf);
  }
  check.wrong += wrong;
  d.verified = true;
  if (wrong > 0)
    throw Error("CUDA backend: the all-gather of the payloads '" + name + "' encoded delivered " + std::to_string(wrong) +
                " wrong floats");
}

// The device side of one plan on this rank: streams, events, buffers, communicators' slots.
struct Prepared {
  const Program* prog = nullptr;
  LaunchPlan lp;
  std::vector<std::unique_ptr<Stream>> lanes;
  std::vector<std::unique_ptr<Event>> start, end;  // per op
  DeviceArray<std::byte> gemm_pool, stream_pool, send_buffer, recv_buffers, arena, resident;
  std::vector<DeviceArray<std::byte>> comm_in, comm_out;  // per communicator (collectives)
  // Schedules (non-native): per op, the rank's part and its workspace and scratch.
  std::vector<const GpuProgram*> program;
  std::map<std::tuple<std::uint32_t, CollectiveOp, Bytes>, std::pair<std::unique_ptr<GpuProgram>, std::unique_ptr<Schedule>>>
      programs;
  std::map<const GpuProgram*, std::pair<DeviceArray<float>, DeviceArray<float>>> workspaces;
  std::vector<void*> transient;  // by tensor id: the live transient allocation
  DeviceTechniques techniques;
  std::vector<std::unique_ptr<kcu::Context>> contexts;  // per lane that runs technique ops (else null)
};

// Technique op i on its lane's context (technique_ops.cpp's TechniqueOps::run, on the GPU).
void run_technique(Prepared& p, std::uint32_t i) {
  const OpLaunch& l = p.lp.ops[i];
  kcu::Context& ctx = *p.contexts.at(l.lane);
  const cudaStream_t s = ctx.stream();
  DeviceTechniques& t = p.techniques;
  switch (l.technique) {
    case TechniqueRole::None: break;
    case TechniqueRole::Compress: {
      const auto e = static_cast<std::size_t>(l.index);
      tgc_encode(p.lp.exchanges[e], t.exchanges[e], ctx);
      break;
    }
    case TechniqueRole::Requantize: {
      const TgcExchange& e = p.lp.exchanges[static_cast<std::size_t>(l.index)];
      DeviceExchange& d = t.exchanges[static_cast<std::size_t>(l.index)];
      const kernels::QuantSpec spec = spec_of(e);
      const std::span<float> sum{d.sum.data(), static_cast<std::size_t>(e.hop)};
      kcu::dequantize(whole_c(d.hop_codes), whole_c(d.hop_scales), spec, sum, ctx);
      CUDA_CHECK(cuda_kernels::add_f32(sum.data(), d.hop_values.data(), e.hop, s));
      kcu::quantize(sum, spec, whole(d.hop_out_codes), whole(d.hop_out_scales), ctx);
      break;
    }
    case TechniqueRole::Decompress: {
      const TgcExchange& e = p.lp.exchanges[static_cast<std::size_t>(l.index)];
      DeviceExchange& d = t.exchanges[static_cast<std::size_t>(l.index)];
      CUDA_CHECK(cudaMemsetAsync(d.sum.data(), 0, d.sum.bytes(), s));
      if (e.op == CollectiveOp::AllGather) {
        // Every member's payload as delivered; uncarried (a schedule moved the plan's bytes): the rank's
        // own payload, as many times.
        for (std::size_t r = 0; r < e.members.size(); ++r)
          tgc_decode_add(e, d, e.carried ? d.output.data() + r * static_cast<std::size_t>(e.payload_floats) : d.payload.data(), ctx);
      } else {
        tgc_decode_add(e, d, d.payload.data(), ctx);  // the reduced codes are no decoded sum (technique_ops.hpp)
      }
      break;
    }
    case TechniqueRole::Refresh: {
      const cuda_detail::DsaLaunch& dsa = p.lp.dsa;
      const auto n = static_cast<std::size_t>(dsa.n), every = static_cast<std::size_t>(dsa.every);
      const std::size_t slice = (n + every - 1) / every;
      const std::size_t at = std::min(n, static_cast<std::size_t>(t.iteration % dsa.every) * slice);
      refresh_slice(dsa, t, at, std::min(slice, n - at), ctx);
      break;
    }
    case TechniqueRole::MaskedStep: {
      kcu::masked_adam(whole(t.params), whole_c(t.grad), whole(t.momentum), whole(t.v), whole_c(t.mask), kernels::AdamSpec{},
                       static_cast<int>(t.iteration + 1), ctx);
      const std::int64_t floats = p.lp.dsa.rest_bytes / 8;  // the step's other parameters, streamed
      float* x = reinterpret_cast<float*>(p.stream_pool.data());
      CUDA_CHECK(cuda_kernels::stream_f32(x + (floats + 3) / 4 * 4, x, floats, 1.0001f, 1e-6f, s));
      break;
    }
    case TechniqueRole::LossScale:
      CUDA_CHECK(cuda_kernels::unscale_f32(t.loss_out.data(), t.loss_in.data(), l.elements, 1.0f / 65536.0f,
                                           t.overflow.data(), s));
      break;
    case TechniqueRole::Statistics: {
      const auto n = static_cast<std::size_t>(l.elements), every = static_cast<std::size_t>(l.every);
      const std::size_t slice = (n + every - 1) / every;
      const std::size_t at = std::min(n, static_cast<std::size_t>(t.iteration % l.every) * slice);
      CUDA_CHECK(cuda_kernels::absmax_sumsq_f32(t.stats.data() + at, static_cast<std::int64_t>(std::min(slice, n - at)),
                                                t.stats_out.data(), s));
      break;
    }
    case TechniqueRole::SparseGemm: {
      const cuda_detail::SparseGemmLaunch& g = p.lp.sparse_gemms[static_cast<std::size_t>(l.index)];
      DeviceSparseGemm& d = t.gemms[static_cast<std::size_t>(l.index)];
      const auto m = static_cast<std::size_t>(g.m);
      for (std::int64_t b = 0; b < g.batch; ++b) {
        if (g.two_four)
          kcu::sparse24_gemm_nt(whole_c(d.x), m, kernels::Sparse24View{d.rows, d.cols, whole_c(d.values), whole_c(d.columns)},
                                whole(d.y), ctx);
        else
          kcu::bsr_gemm_nt(whole_c(d.x), m,
                           kernels::BsrView{d.rows, d.cols, static_cast<std::size_t>(g.block), whole_c(d.row_ptr),
                                            whole_c(d.col_idx), whole_c(d.values)},
                           whole(d.y), ctx);
      }
      break;
    }
  }
}

}  // namespace

struct CudaBackend::Impl {
  Job job;
  int device = 0;
  std::unique_ptr<NcclComm> world;
  std::vector<GroupSet> comm_groups;  // the groups `comms` were split for
  std::map<cuda_detail::CommKey, std::unique_ptr<NcclComm>> comms;
  std::unique_ptr<CublasHandle> cublas;

  ncclComm_t comm_for(const Plan& plan, const cuda_detail::CommKey& key);
  void launch(const Plan& plan, Prepared& p, std::uint32_t i);
  struct Record {
    std::vector<Span> spans;
    std::vector<MemorySample> memory;
  };
  Record iterate(const Plan& plan, Prepared& p, bool record);
};

ncclComm_t CudaBackend::Impl::comm_for(const Plan& plan, const cuda_detail::CommKey& key) {
  auto it = comms.find(key);
  if (it != comms.end()) return it->second->get();
  // ncclCommSplit is collective over the parent: every rank asks for the same keys in the same order
  // (plan_comms), a rank outside every group of the kind with NCCL_SPLIT_NOCOLOR.
  int color = 0;
  if (!key.p2p) {
    const int group = plan.group_set(key.group).group_of_rank.at(static_cast<std::size_t>(job.rank()));
    color = group < 0 ? NCCL_SPLIT_NOCOLOR : group;
  }
  ncclComm_t c = nullptr;
  // key = world rank: positions follow members' ascending order, each member's rank within a schedule.
  NCCL_CHECK(ncclCommSplit(world->get(), color, job.rank(), &c, nullptr));
  return comms.emplace(key, std::make_unique<NcclComm>(c)).first->second->get();
}

CudaBackend::CudaBackend(CudaBackendOptions options) : options_(std::move(options)), impl_(std::make_unique<Impl>()) {
  validate(options_);
  Impl& im = *impl_;
  const int devices = cuda_detail::agree_on_devices(im.job);  // Unavailable on every rank alike
  im.device = im.job.local_rank() % devices;
  CUDA_CHECK(cudaSetDevice(im.device));
  // Freed stream-ordered memory stays in the device's pool for the next iteration instead of going
  // back to the driver at every synchronisation.
  cudaMemPool_t pool = nullptr;
  CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, im.device));
  std::uint64_t keep = UINT64_MAX;
  CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
  im.world = std::make_unique<NcclComm>(im.job, std::string());
  im.cublas = std::make_unique<CublasHandle>();
}

CudaBackend::~CudaBackend() = default;

void CudaBackend::Impl::launch(const Plan& plan, Prepared& p, std::uint32_t i) {
  const OpLaunch& l = p.lp.ops[i];
  const cudaStream_t s = p.lanes[l.lane]->get();
  switch (l.kind) {
    case OpLaunch::Kind::Gemm: {
      const auto [data, compute] = cublas_types(l.dtype);
      const Bytes e = bytes_per_element(l.dtype);
      std::byte* a = p.gemm_pool.data();
      std::byte* b = a + align16(l.batch * l.m * l.k * e);
      std::byte* c = b + align16(l.batch * l.k * l.n * e);
      const float alpha = 1.0f, beta = 0.0f;
      const int m = static_cast<int>(l.m), n = static_cast<int>(l.n), k = static_cast<int>(l.k);
      CUBLAS_CHECK(cublasSetStream(cublas->get(), s));
      // Column-major C(m×n) = A(m×k)·B(k×n), batch elements back to back.
      CUBLAS_CHECK(cublasGemmStridedBatchedEx(cublas->get(), CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, a, data, m, l.m * l.k,
                                              b, data, k, l.k * l.n, &beta, c, data, m, l.m * l.n,
                                              static_cast<int>(l.batch), compute, CUBLAS_GEMM_DEFAULT));
      break;
    }
    case OpLaunch::Kind::Stream: {
      const std::int64_t floats = l.bytes / 8;  // read as many as written
      float* x = reinterpret_cast<float*>(p.stream_pool.data());
      float* y = x + (floats + 3) / 4 * 4;
      CUDA_CHECK(cuda_kernels::stream_f32(y, x, floats, 1.0001f, 1e-6f, s));
      break;
    }
    case OpLaunch::Kind::Technique:
      run_technique(p, i);
      break;
    case OpLaunch::Kind::Collective: {
      const std::int64_t floats = l.bytes / 4;
      if (floats == 0) break;
      const ncclComm_t c = comm_for(plan, p.lp.comms[l.comm]);
      if (l.index >= 0) {  // a TGC exchange's payload, from its payload buffer into its output buffer
        DeviceExchange& d = p.techniques.exchanges[static_cast<std::size_t>(l.index)];
        const std::size_t count = d.payload.size();
        if (l.collective == CollectiveOp::AllGather) NCCL_CHECK(ncclAllGather(d.payload.data(), d.output.data(), count, ncclFloat, c, s));
        else NCCL_CHECK(ncclAllReduce(d.payload.data(), d.output.data(), count, ncclFloat, ncclSum, c, s));
        break;
      }
      if (const GpuProgram* prog = p.program[i]) {
        auto& [workspace, scratch] = p.workspaces.at(prog);
        prog->run(c, s, workspace.data(), scratch.data());
        break;
      }
      int members = 0;
      NCCL_CHECK(ncclCommCount(c, &members));
      float* in = reinterpret_cast<float*>(p.comm_in[l.comm].data());
      float* out = reinterpret_cast<float*>(p.comm_out[l.comm].data());
      const auto count = static_cast<std::size_t>(floats);
      const auto block = static_cast<std::size_t>(floats / members);
      switch (l.collective) {
        case CollectiveOp::AllReduce: NCCL_CHECK(ncclAllReduce(in, out, count, ncclFloat, ncclSum, c, s)); break;
        case CollectiveOp::ReduceScatter: NCCL_CHECK(ncclReduceScatter(in, out, block, ncclFloat, ncclSum, c, s)); break;
        case CollectiveOp::AllGather: NCCL_CHECK(ncclAllGather(in, out, block, ncclFloat, c, s)); break;
        case CollectiveOp::Broadcast: NCCL_CHECK(ncclBroadcast(in, out, count, ncclFloat, 0, c, s)); break;
        case CollectiveOp::Reduce: NCCL_CHECK(ncclReduce(in, out, count, ncclFloat, ncclSum, 0, c, s)); break;
        case CollectiveOp::AllToAll: {
          NcclGroup group;  // NCCL has no all-to-all call: a send and a receive per peer
          for (int q = 0; q < members; ++q) {
            NCCL_CHECK(ncclSend(in + static_cast<std::size_t>(q) * block, block, ncclFloat, q, c, s));
            NCCL_CHECK(ncclRecv(out + static_cast<std::size_t>(q) * block, block, ncclFloat, q, c, s));
          }
          group.end();
          break;
        }
      }
      break;
    }
    case OpLaunch::Kind::Send:
      if (l.bytes > 0)
        NCCL_CHECK(ncclSend(p.send_buffer.data(), static_cast<std::size_t>(l.bytes), ncclChar, l.peer,
                            comm_for(plan, p.lp.comms[l.comm]), s));
      break;
    case OpLaunch::Kind::Recv:
      if (l.bytes > 0)
        NCCL_CHECK(ncclRecv(p.recv_buffers.data() + p.lp.recv_offset[i], static_cast<std::size_t>(l.bytes), ncclChar, l.peer,
                            comm_for(plan, p.lp.comms[l.comm]), s));
      break;
    case OpLaunch::Kind::SendDone:
      break;  // its lane already waits for the send's end (iterate)
    case OpLaunch::Kind::Alloc:
      if (l.placement == OpLaunch::Placement::Transient && l.bytes > 0) {
        void*& at = p.transient.at(static_cast<std::size_t>(l.tensor));
        CUDA_CHECK(cudaMallocAsync(&at, static_cast<std::size_t>(l.bytes), s));
      }
      break;
    case OpLaunch::Kind::Free:
      if (l.placement == OpLaunch::Placement::Transient && l.bytes > 0) {
        void*& at = p.transient.at(static_cast<std::size_t>(l.tensor));
        CUDA_CHECK(cudaFreeAsync(at, s));
        at = nullptr;
      }
      break;
  }
}

CudaBackend::Impl::Record CudaBackend::Impl::iterate(const Plan& plan, Prepared& p, bool record) {
  const Program& prog = *p.prog;
  const std::size_t n = prog.size();
  // Start together: every queue empty, then one start event that every stream waits for.
  CUDA_CHECK(cudaDeviceSynchronize());
  job.barrier();
  const Event t0;
  CUDA_CHECK(cudaEventRecord(t0.get(), p.lanes[0]->get()));
  for (std::size_t k = 1; k < p.lanes.size(); ++k) CUDA_CHECK(cudaStreamWaitEvent(p.lanes[k]->get(), t0.get(), 0));
  // Program order is a topological order of every edge (dependencies point backwards), so each awaited
  // event is recorded before it is waited for.
  for (std::uint32_t i = 0; i < n; ++i) {
    const OpLaunch& l = p.lp.ops[i];
    const cudaStream_t s = p.lanes[l.lane]->get();
    for (std::size_t w = 0; w < p.lp.num_waits(i); ++w) {
      const std::uint32_t j = p.lp.waits_of(i)[w];
      const bool at_start = p.lp.ops[j].release_at_start && l.kind != OpLaunch::Kind::SendDone;
      const Event& release = at_start ? *p.start[j] : *p.end[j];
      CUDA_CHECK(cudaStreamWaitEvent(s, release.get(), 0));
    }
    CUDA_CHECK(cudaEventRecord(p.start[i]->get(), s));
    launch(plan, p, i);
    CUDA_CHECK(cudaEventRecord(p.end[i]->get(), s));
  }
  CUDA_CHECK(cudaDeviceSynchronize());
  // Technique checks, on the host after the iteration: the overflow flag, and once per exchange the
  // all-gathered payloads of the first iteration against the host's encoding of every member's.
  DeviceTechniques& tech = p.techniques;
  if (tech.overflow.size() > 0) {
    int overflow = 0;
    CUDA_CHECK(cudaMemcpy(&overflow, tech.overflow.data(), sizeof overflow, cudaMemcpyDeviceToHost));
    if (overflow != 0) throw Error("loss scale: a gradient overflowed");
  }
  for (std::size_t e = 0; e < p.lp.exchanges.size(); ++e) {
    const TgcExchange& x = p.lp.exchanges[e];
    if (x.carried && x.op == CollectiveOp::AllGather && x.collective >= 0 && !tech.exchanges[e].verified)
      verify_exchange(x, tech.exchanges[e], tech.check, plan.names.at(x.name));
  }
  ++tech.iteration;
  Record rec;
  if (!record) return rec;
  auto at = [&](const Event& e) { return Time::from_seconds(cuda_detail::elapsed_seconds(t0, e)); };
  const int rank = job.rank();
  struct Change {
    Time time;
    Bytes delta;
  };
  std::vector<Change> changes;
  for (std::uint32_t i = 0; i < n; ++i) {
    const PlanOp& op = prog.ops[i];
    if (op.kind == OpKind::Alloc || op.kind == OpKind::Free) {
      changes.push_back({at(*p.start[i]), memory_delta(prog, op)});
      continue;
    }
    if (!records_span(op.kind)) continue;
    const Time start = at(*p.start[i]);
    const Time end = std::max(start, at(*p.end[i]));
    rec.spans.push_back(span_for(rank, i, op, start, end, p.lp.ops[i].flops));
  }
  // Samples in time order; ops of one time keep program order (the last change at a time wins).
  std::stable_sort(changes.begin(), changes.end(), [](const Change& a, const Change& b) { return a.time < b.time; });
  MemoryTimeline memory(rank);
  if (memory_at_start(prog) > 0) memory.change(Time{}, memory_at_start(prog));
  for (const Change& c : changes) memory.change(c.time, c.delta);
  rec.memory = memory.take();
  return rec;
}

Trace CudaBackend::run(const Plan& plan) {
  Impl& im = *impl_;
  const int rank = im.job.rank();
  // ---- checks, on every rank alike before any GPU work.
  if (plan.world_size() != im.job.size())
    throw InvalidArgument("the plan is for " + std::to_string(plan.world_size()) + " ranks but the job has " +
                          std::to_string(im.job.size()) + " (one process per GPU: mpirun -np " +
                          std::to_string(plan.world_size()) + ")");
  twinbed::validate(plan);
  check_collective_streams(plan, "CUDA backend");
  const bool native = options_.collective_algorithm == kNativeAlgorithm;

  Prepared p;
  p.prog = &plan.program(rank);
  p.lp = cuda_detail::plan_launches(plan, rank, native);
  const LaunchPlan& lp = p.lp;
  const std::size_t n = p.prog->size();

  // Schedules (non-native), built before any GPU work so that a missing op fails on every rank alike.
  p.program.assign(n, nullptr);
  if (!native) {
    const auto registry = collective_algorithms();
    for (std::uint32_t i = 0; i < n; ++i) {
      const OpLaunch& l = lp.ops[i];
      if (l.kind != OpLaunch::Kind::Collective || l.bytes == 0) continue;
      const PlanOp& op = p.prog->ops[i];
      const std::vector<int>& members = plan.group_members(rank, op.group);
      const int size = static_cast<int>(members.size());
      if (size == 1) continue;  // NCCL's own collective on one rank: nothing to schedule
      auto& slot = p.programs[{l.comm, l.collective, l.bytes}];
      if (!slot.first) {
        const CollectiveRequest req{l.collective, size, l.bytes, 0, options_.ranks_per_host};
        try {
          slot.second = registry.get(options_.collective_algorithm).build(req);
        } catch (const InvalidArgument& e) {
          throw InvalidArgument("collective '" + plan.names.at(op.name) + "' (" + to_string(l.collective) + " over " +
                                std::to_string(size) + " ranks) cannot run with algorithm '" +
                                options_.collective_algorithm + "': " + e.what());
        }
        const int me = static_cast<int>(std::find(members.begin(), members.end(), rank) - members.begin());
        slot.first = std::make_unique<GpuProgram>(*slot.second, me);
      }
      p.program[i] = slot.first.get();
    }
  }
  Bytes schedule_bytes = 0;
  for (const auto& [key, slot] : p.programs) {
    std::int64_t floats = 0;
    for (const ChunkElements& c : slot.first->layout()) floats = std::max(floats, c.offset + c.count);
    schedule_bytes += 4 * (floats + slot.first->scratch_floats());
  }

  // Memory: every rank checks its own, and all agree, so none starts what another cannot.
  std::size_t free_bytes = 0, total_bytes = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  const Bytes need = lp.device_bytes() + schedule_bytes;
  const bool fits = need <= static_cast<Bytes>(free_bytes * 9 / 10);
  if (!im.job.min_over_ranks(fits ? 1 : 0))
    throw InvalidArgument("the plan needs " + std::to_string(need) + " bytes of device memory on rank " +
                          std::to_string(rank) + " (GEMM pool " + std::to_string(lp.gemm_pool) + ", streaming " +
                          std::to_string(lp.stream_pool) + ", messages " + std::to_string(lp.send_buffer + lp.recv_buffers) +
                          ", collectives " + std::to_string(lp.collective_buffers + schedule_bytes) + ", tensors " +
                          std::to_string(lp.arena + lp.resident + lp.transient_peak) + ") but " +
                          std::to_string(free_bytes) + " are free (or another rank's GPU is short): use a smaller model");

  // ---- communicators (collective over the job: same keys, same order on every rank), streams, buffers.
  if (im.comm_groups != plan.groups) {
    im.comms.clear();
    im.comm_groups = plan.groups;
  }
  for (const cuda_detail::CommKey& key : lp.comms) im.comm_for(plan, key);
  for (std::uint32_t k = 0; k < lp.lane_count(); ++k) p.lanes.push_back(std::make_unique<Stream>());
  // A kernels' Context (its cuBLAS handle bound to the lane) for each lane that runs technique ops.
  p.contexts.resize(lp.lane_count());
  for (const OpLaunch& l : lp.ops)
    if (l.kind == OpLaunch::Kind::Technique && !p.contexts[l.lane])
      p.contexts[l.lane] = std::make_unique<kcu::Context>(p.lanes[l.lane]->get());
  for (std::size_t i = 0; i < n; ++i) {
    p.start.push_back(std::make_unique<Event>());
    p.end.push_back(std::make_unique<Event>());
  }
  auto bytes_of = [](Bytes b) { return static_cast<std::size_t>(b); };
  // Three 16-byte-aligned regions (A, B, C) may each round up by 15 bytes.
  p.gemm_pool = DeviceArray<std::byte>(bytes_of(lp.gemm_pool > 0 ? lp.gemm_pool + 48 : 0));
  p.stream_pool = DeviceArray<std::byte>(bytes_of(lp.stream_pool > 0 ? lp.stream_pool + 32 : 0));
  p.send_buffer = DeviceArray<std::byte>(bytes_of(lp.send_buffer));
  p.recv_buffers = DeviceArray<std::byte>(bytes_of(lp.recv_buffers));
  p.arena = DeviceArray<std::byte>(bytes_of(lp.arena));
  p.resident = DeviceArray<std::byte>(bytes_of(lp.resident));
  for (Bytes b : lp.comm_buffer) {
    p.comm_in.emplace_back(bytes_of(b));
    p.comm_out.emplace_back(bytes_of(b));
  }
  for (const auto& [key, slot] : p.programs) {
    std::int64_t floats = 0;
    for (const ChunkElements& c : slot.first->layout()) floats = std::max(floats, c.offset + c.count);
    p.workspaces.emplace(slot.first.get(), std::make_pair(DeviceArray<float>(static_cast<std::size_t>(floats)),
                                                          DeviceArray<float>(static_cast<std::size_t>(slot.first->scratch_floats()))));
  }
  std::int32_t max_tensor = -1;
  for (const PlanOp& op : p.prog->ops) max_tensor = std::max(max_tensor, op.tensor);
  p.transient.assign(static_cast<std::size_t>(max_tensor + 1), nullptr);
  // GEMM inputs: random bf16 in [-1, 1), which read as fp16 or fp32 are finite too (never zeros: they
  // flatter the tensor cores). Streaming and communication buffers: zeros (their time does not depend
  // on values, and sums of zeros stay finite however often they are reused).
  if (p.gemm_pool.size() > 0)
    CUDA_CHECK(cuda_kernels::fill_uniform(p.gemm_pool.data(), static_cast<std::int64_t>(p.gemm_pool.size() / 2),
                                          cuda_kernels::FillType::BF16, 7u, p.lanes[0]->get()));
  for (auto* a : {&p.stream_pool, &p.send_buffer, &p.recv_buffers})
    if (a->size() > 0) CUDA_CHECK(cudaMemsetAsync(a->data(), 0, a->size(), p.lanes[0]->get()));
  for (auto* v : {&p.comm_in, &p.comm_out})
    for (auto& a : *v)
      if (a.size() > 0) CUDA_CHECK(cudaMemsetAsync(a.data(), 0, a.size(), p.lanes[0]->get()));
  for (auto& [prog, ws] : p.workspaces)
    if (ws.first.size() > 0) CUDA_CHECK(cudaMemsetAsync(ws.first.data(), 0, ws.first.bytes(), p.lanes[0]->get()));

  // Technique state: synthetic gradients, masks, sparse weights, filled once and kept over the iterations.
  {
    std::unique_ptr<kcu::Context> setup;
    kcu::Context* ctx = p.contexts[0].get();
    if (ctx == nullptr) ctx = (setup = std::make_unique<kcu::Context>(p.lanes[0]->get())).get();
    make_techniques(lp, rank, p.techniques, *ctx);
  }

  // ---- warm-up, then the recorded iteration. The first, which allocates the transient tensors, is also
  // measured by the allocator: the device pool's reserved-memory high-water mark over it (its unused
  // memory first given back, the mark reset), plus the arena and resident tensors allocated above —
  // the stream-ordered allocator's granularity and fragmentation included, which the plan does not see.
  Impl::Record rec;
  cudaMemPool_t device_pool = nullptr;
  CUDA_CHECK(cudaDeviceGetDefaultMemPool(&device_pool, im.device));
  std::int64_t allocator_peak = 0;
  for (int it = 0; it <= options_.warmup_iters; ++it) {
    if (it == 0) {
      CUDA_CHECK(cudaDeviceSynchronize());
      CUDA_CHECK(cudaMemPoolTrimTo(device_pool, 0));
      std::uint64_t zero = 0;
      CUDA_CHECK(cudaMemPoolSetAttribute(device_pool, cudaMemPoolAttrReservedMemHigh, &zero));
    }
    rec = im.iterate(plan, p, it == options_.warmup_iters);
    if (it == 0) {
      std::uint64_t high = 0;
      CUDA_CHECK(cudaMemPoolGetAttribute(device_pool, cudaMemPoolAttrReservedMemHigh, &high));
      allocator_peak = static_cast<std::int64_t>(high + p.arena.size() + p.resident.size());
    }
  }

  // ---- gather to rank 0.
  Trace trace = detail::measured_trace(plan, name());
  trace.step_time = Time::ps(im.job.max_over_ranks(detail::last_span_end(rec.spans)));

  const std::vector<char> mine_spans = detail::pack_spans(rec.spans), mine_samples = detail::pack_samples(rec.memory);
  const std::vector<char> span_bytes = im.job.gather_to_0(mine_spans.data(), static_cast<std::int64_t>(mine_spans.size()));
  const std::vector<char> sample_bytes = im.job.gather_to_0(mine_samples.data(), static_cast<std::int64_t>(mine_samples.size()));
  detail::take_records(trace, rank == 0, std::move(rec.spans), std::move(rec.memory), span_bytes, sample_bytes);
  const std::vector<char> peaks = im.job.gather_to_0(&allocator_peak, sizeof allocator_peak);
  if (rank == 0) {
    trace.resident_peak.resize(peaks.size() / sizeof allocator_peak);
    std::memcpy(trace.resident_peak.data(), peaks.data(), peaks.size());
  }
  payload_check_.floats += p.techniques.check.floats;
  payload_check_.wrong += p.techniques.check.wrong;
  return trace;
}

}  // namespace twinbed::real
