// Internal to real/: assembling the Trace a real backend measured — its header, a rank's spans and
// memory samples as bytes for gathering to rank 0 (the CPU backend over MPI_Gatherv, the CUDA backend
// over its job's gather) and back. The layout is one host's: every rank runs the same binary. Free of
// MPI and CUDA.
#pragma once

#include <vector>

#include <cstdint>
#include <string>

#include "twinbed/core/plan.hpp"
#include "twinbed/core/trace.hpp"

namespace twinbed::real::detail {

std::vector<char> pack_spans(const std::vector<Span>& spans);
// Bytes that are not whole records are an InvalidArgument.
std::vector<Span> unpack_spans(const std::vector<char>& bytes);
std::vector<char> pack_samples(const std::vector<MemorySample>& samples);
std::vector<MemorySample> unpack_samples(const std::vector<char>& bytes);

// A Trace of `plan` measured by `backend` on every rank (recorded_rank the identity, the plan's names),
// without records or step time yet.
Trace measured_trace(const Plan& plan, const std::string& backend);
// The latest end of `spans`, in picoseconds (0 when empty): a rank's share of the step time.
std::int64_t last_span_end(const std::vector<Span>& spans);
// Rank 0 takes every rank's records from the gathered bytes, another rank keeps its own; spans are
// then in canonical order (plan_exec.hpp). Samples arrive in rank order and in time order within a rank.
void take_records(Trace& trace, bool root, std::vector<Span>&& spans, std::vector<MemorySample>&& memory,
                  const std::vector<char>& gathered_spans, const std::vector<char>& gathered_samples);

}  // namespace twinbed::real::detail
