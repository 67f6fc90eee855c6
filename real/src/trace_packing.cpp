#include "trace_packing.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#include "twinbed/core/error.hpp"
#include "twinbed/core/plan_exec.hpp"

namespace twinbed::real::detail {
namespace {

struct PackedSpan {
  std::int64_t start_ps, end_ps, bytes;
  double flops;
  std::int32_t rank, micro_batch, op;
  std::uint32_t name;
  std::uint8_t stream, kind, pad0, pad1;
};
struct PackedSample {
  std::int64_t time_ps, bytes;
  std::int32_t rank, pad;
};

template <class Packed, class T, class Pack>
std::vector<char> pack(const std::vector<T>& items, Pack&& to_packed) {
  std::vector<char> out(items.size() * sizeof(Packed));
  for (std::size_t i = 0; i < items.size(); ++i) {
    const Packed p = to_packed(items[i]);
    std::memcpy(out.data() + i * sizeof(Packed), &p, sizeof(Packed));
  }
  return out;
}

template <class Packed, class T, class Unpack>
std::vector<T> unpack(const std::vector<char>& bytes, Unpack&& from_packed, const char* what) {
  if (bytes.size() % sizeof(Packed) != 0)
    throw InvalidArgument(std::string("unpack ") + what + ": " + std::to_string(bytes.size()) + " bytes are not whole records");
  std::vector<T> out(bytes.size() / sizeof(Packed));
  for (std::size_t i = 0; i < out.size(); ++i) {
    Packed p;
    std::memcpy(&p, bytes.data() + i * sizeof(Packed), sizeof(Packed));
    out[i] = from_packed(p);
  }
  return out;
}

}  // namespace

std::vector<char> pack_spans(const std::vector<Span>& spans) {
  return pack<PackedSpan>(spans, [](const Span& s) {
    return PackedSpan{s.start.picoseconds(), s.end.picoseconds(), s.bytes, s.flops, s.rank, s.micro_batch, s.op, s.name,
                      static_cast<std::uint8_t>(s.stream), static_cast<std::uint8_t>(s.kind), 0, 0};
  });
}

std::vector<Span> unpack_spans(const std::vector<char>& bytes) {
  return unpack<PackedSpan, Span>(bytes, [](const PackedSpan& p) {
    Span s;
    s.rank = p.rank;
    s.stream = static_cast<StreamKind>(p.stream);
    s.kind = static_cast<SpanKind>(p.kind);
    s.name = p.name;
    s.start = Time::ps(p.start_ps);
    s.end = Time::ps(p.end_ps);
    s.micro_batch = p.micro_batch;
    s.op = p.op;
    s.bytes = p.bytes;
    s.flops = p.flops;
    return s;
  }, "spans");
}

std::vector<char> pack_samples(const std::vector<MemorySample>& samples) {
  return pack<PackedSample>(samples, [](const MemorySample& m) { return PackedSample{m.time.picoseconds(), m.bytes, m.rank, 0}; });
}

std::vector<MemorySample> unpack_samples(const std::vector<char>& bytes) {
  return unpack<PackedSample, MemorySample>(bytes, [](const PackedSample& p) { return MemorySample{p.rank, Time::ps(p.time_ps), p.bytes}; },
                                            "memory samples");
}

Trace measured_trace(const Plan& plan, const std::string& backend) {
  Trace trace;
  trace.backend = backend;
  trace.world_size = plan.world_size();
  trace.recorded_rank.resize(static_cast<std::size_t>(plan.world_size()));
  for (int r = 0; r < plan.world_size(); ++r) trace.recorded_rank[static_cast<std::size_t>(r)] = r;
  trace.names = plan.names;
  return trace;
}

std::int64_t last_span_end(const std::vector<Span>& spans) {
  std::int64_t end = 0;
  for (const Span& s : spans) end = std::max(end, s.end.picoseconds());
  return end;
}

void take_records(Trace& trace, bool root, std::vector<Span>&& spans, std::vector<MemorySample>&& memory,
                  const std::vector<char>& gathered_spans, const std::vector<char>& gathered_samples) {
  if (root) {
    trace.spans = unpack_spans(gathered_spans);
    trace.memory = unpack_samples(gathered_samples);
  } else {
    trace.spans = std::move(spans);
    trace.memory = std::move(memory);
  }
  sort_spans(trace.spans);
}

}  // namespace twinbed::real::detail
