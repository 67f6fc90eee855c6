// twinbed::kernels — shared vocabulary of the technique kernels.
//
// Every kernel exists twice with one signature: `cpu::f(args...)` is the reference (plain,
// vectorisable C++ over std::span; single-threaded, re-entrant, no shared state) and
// `cuda::f(args..., cuda::Context&)` is its CUDA twin over device memory (spans of device pointers),
// declared only when the library was built with CUDA (TWINBED_KERNELS_HAVE_CUDA == 1).
//
// Errors: bad arguments (sizes that do not match, k > n, a bit width outside {2,4,8,16}, ...) throw
// std::invalid_argument whose message starts with the kernel's name; the CUDA twins check the same
// arguments on the host, with the same messages, before launching anything. CUDA failures throw
// twinbed::kernels::CudaError (see cuda_context.hpp). The library never prints and never exits.
#pragma once

#include <optional>
#include <string>

#if defined(__CUDACC__)
#define TWINBED_HD __host__ __device__
#else
#define TWINBED_HD
#endif

#ifndef TWINBED_KERNELS_HAVE_CUDA
#define TWINBED_KERNELS_HAVE_CUDA 0
#endif

namespace twinbed::kernels {

// THE CUDA availability probe of twinbed: the kernels' twins and the real backend (which re-exports it
// as real::cuda_unavailable_reason) ask this one.
//
// True when this build has CUDA and at least one CUDA device can be used. Never throws, never crashes
// on a machine without a driver or a GPU; cheap after the first call is not promised (it asks the
// runtime each time), so call it once per test fixture or program.
bool cuda_available() noexcept;

// Why cuda_available() is false, in one line — "twinbed was built without CUDA, ...: configure on a
// machine with the CUDA toolkit (...)", "no CUDA device: <runtime message> (<error name>)", "no CUDA
// device: the CUDA runtime sees 0 devices" — or nullopt when it is true. Never throws for a missing
// GPU; for GTEST_SKIP messages, Unavailable errors and CLI diagnostics.
std::optional<std::string> cuda_unavailable_reason();

}  // namespace twinbed::kernels
