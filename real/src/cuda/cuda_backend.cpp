// The CUDA Plan backend (cuda_backend.hpp): executes what plan_launch.hpp planned. This file says why.
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

#include "device.hpp"
#include "device_kernels.hpp"
#include "nccl_common.hpp"
#include "plan_launch.hpp"
#include "../trace_packing.hpp"
#include "twinbed/core/collective_algorithms.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/plan_exec.hpp"
#include "twinbed/real/collective_data.hpp"
#include "twinbed/real/cuda_check.hpp"

namespace twinbed::real {
namespace {

using cuda_detail::DeviceArray;
using cuda_detail::Event;
using cuda_detail::GpuProgram;
using cuda_detail::Job;
using cuda_detail::LaunchPlan;
using cuda_detail::NcclComm;
using cuda_detail::NcclGroup;
using cuda_detail::OpLaunch;
using cuda_detail::Stream;

class CublasHandle {
 public:
  CublasHandle() { CUBLAS_CHECK(cublasCreate(&handle_)); }
  ~CublasHandle() { (void)cublasDestroy(handle_); }
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  cublasHandle_t get() const { return handle_; }

 private:
  cublasHandle_t handle_ = nullptr;
};

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
};

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
    case OpLaunch::Kind::Collective: {
      const std::int64_t floats = l.bytes / 4;
      if (floats == 0) break;
      const ncclComm_t c = comm_for(plan, p.lp.comms[l.comm]);
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
      const Event& release = p.lp.ops[j].release_at_start ? *p.start[j] : *p.end[j];
      CUDA_CHECK(cudaStreamWaitEvent(s, release.get(), 0));
    }
    CUDA_CHECK(cudaEventRecord(p.start[i]->get(), s));
    launch(plan, p, i);
    CUDA_CHECK(cudaEventRecord(p.end[i]->get(), s));
  }
  CUDA_CHECK(cudaDeviceSynchronize());
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
  p.lp = cuda_detail::plan_launches(plan, rank);
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

  // ---- warm-up, then the recorded iteration.
  Impl::Record rec;
  for (int it = 0; it <= options_.warmup_iters; ++it) rec = im.iterate(plan, p, it == options_.warmup_iters);

  // ---- gather to rank 0.
  Trace trace;
  trace.backend = name();
  trace.world_size = plan.world_size();
  trace.recorded_rank.resize(static_cast<std::size_t>(plan.world_size()));
  for (int r = 0; r < plan.world_size(); ++r) trace.recorded_rank[static_cast<std::size_t>(r)] = r;
  trace.names = plan.names;
  std::int64_t local_end = 0;
  for (const Span& s : rec.spans) local_end = std::max(local_end, s.end.picoseconds());
  trace.step_time = Time::ps(im.job.max_over_ranks(local_end));

  const std::vector<char> mine_spans = detail::pack_spans(rec.spans), mine_samples = detail::pack_samples(rec.memory);
  const std::vector<char> span_bytes = im.job.gather_to_0(mine_spans.data(), static_cast<std::int64_t>(mine_spans.size()));
  const std::vector<char> sample_bytes = im.job.gather_to_0(mine_samples.data(), static_cast<std::int64_t>(mine_samples.size()));
  if (rank != 0) {
    trace.spans = std::move(rec.spans);
    trace.memory = std::move(rec.memory);
  } else {
    trace.spans = detail::unpack_spans(span_bytes);
    trace.memory = detail::unpack_samples(sample_bytes);
  }
  sort_spans(trace.spans);
  return trace;
}

}  // namespace twinbed::real
