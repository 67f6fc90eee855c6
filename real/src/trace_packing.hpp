// Internal to real/: a rank's spans and memory samples as bytes, for gathering a Trace to rank 0 (the
// CPU backend over MPI_Gatherv, the CUDA backend over its job's gather), and back. The layout is one
// host's: every rank runs the same binary. Free of MPI and CUDA.
#pragma once

#include <vector>

#include "twinbed/core/trace.hpp"

namespace twinbed::real::detail {

std::vector<char> pack_spans(const std::vector<Span>& spans);
// Bytes that are not whole records are an InvalidArgument.
std::vector<Span> unpack_spans(const std::vector<char>& bytes);
std::vector<char> pack_samples(const std::vector<MemorySample>& samples);
std::vector<MemorySample> unpack_samples(const std::vector<char>& bytes);

}  // namespace twinbed::real::detail
