#include "tensor_memory.hpp"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "twinbed/core/error.hpp"
#include "twinbed/core/plan_exec.hpp"

namespace twinbed::real::detail {
namespace {

constexpr std::int64_t kPage = 4096;

// Writes one byte per page of [p, p + bytes), and the last byte: the pages become resident.
void touch(unsigned char* p, std::int64_t bytes) {
  if (bytes <= 0) return;
  for (std::int64_t i = 0; i < bytes; i += kPage) p[i] = 1;
  p[bytes - 1] = 1;
}

std::int32_t max_tensor(const Program& program) {
  std::int32_t m = -1;
  for (const PlanOp& op : program.ops)
    if (op.kind == OpKind::Alloc || op.kind == OpKind::Free) m = std::max(m, op.tensor);
  return m;
}

}  // namespace

TensorMemory::TensorMemory(const Program& program) : program_(&program) {
  const auto tensors = static_cast<std::size_t>(max_tensor(program) + 1);
  live_.assign(tensors, nullptr);
  size_.assign(tensors, 0);
  carried_.assign(tensors, false);
  if (program.arena.size > 0) {
    arena_.reset(new unsigned char[static_cast<std::size_t>(program.arena.size)]);
    held_ = peak_ = program.arena.size;
  }
}

TensorMemory::~TensorMemory() {
  for (std::size_t t = 0; t < live_.size(); ++t)
    if (size_[t] > 0) std::free(live_[t]);
}

void TensorMemory::apply(const PlanOp& op) {
  if (op.kind != OpKind::Alloc && op.kind != OpKind::Free) return;
  if (op.tensor < 0 || static_cast<std::size_t>(op.tensor) >= live_.size())
    throw InvalidArgument("tensor " + std::to_string(op.tensor) + " is not a tensor of the program");
  const auto t = static_cast<std::size_t>(op.tensor);
  if (op.kind == OpKind::Alloc) {
    if (live_[t] != nullptr && !carried_[t]) throw InvalidArgument("tensor " + std::to_string(op.tensor) + " allocated twice");
    carried_[t] = false;
    if (live_[t] == nullptr) {
      const Bytes offset = program_->arena.offset(op.tensor);
      if (offset >= 0) {
        live_[t] = arena_.get() + offset;
      } else {
        live_[t] = static_cast<unsigned char*>(std::malloc(static_cast<std::size_t>(std::max<Bytes>(op.bytes, 1))));
        if (live_[t] == nullptr) throw Error("out of memory allocating " + std::to_string(op.bytes) + " bytes");
        size_[t] = std::max<Bytes>(op.bytes, 1);
        held_ += size_[t];
        peak_ = std::max(peak_, held_);
      }
    }
    touch(live_[t], op.bytes);
    return;
  }
  if (live_[t] == nullptr) throw InvalidArgument("tensor " + std::to_string(op.tensor) + " freed but not live");
  if (size_[t] > 0) {
    std::free(live_[t]);
    held_ -= size_[t];
  }
  live_[t] = nullptr;
  size_[t] = 0;
  carried_[t] = false;
}

void TensorMemory::next_iteration() {
  for (std::size_t t = 0; t < live_.size(); ++t) carried_[t] = live_[t] != nullptr;
}

std::int64_t TensorMemory::program_peak(const Program& program) {
  std::int64_t live = memory_at_start(program), peak = live;
  for (const PlanOp& op : program.ops) {
    live += memory_delta(program, op);
    peak = std::max(peak, live);
  }
  return peak;
}

}  // namespace twinbed::real::detail
