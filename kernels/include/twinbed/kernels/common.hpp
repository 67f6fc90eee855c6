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

// True when this build has the CUDA twins and at least one CUDA device can be used. Never throws,
// never crashes on a machine without a driver or a GPU; cheap after the first call is not promised
// (it asks the runtime each time), so call it once per test fixture or program.
bool cuda_available() noexcept;

// Why cuda_available() is false ("built without CUDA", "no CUDA device: <runtime message>"), or
// an empty string when it is true. For GTEST_SKIP messages and CLI diagnostics.
std::string cuda_unavailable_reason();

}  // namespace twinbed::kernels
