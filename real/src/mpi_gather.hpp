// Internal to real/: every rank's bytes gathered on rank 0 of an MPI communicator, for the CPU and CUDA
// backends' traces. Needs MPI (include only where TWINBED_HAVE_MPI).
#pragma once

#include <mpi.h>

#include <climits>
#include <cstdint>
#include <string>
#include <vector>

#include "twinbed/core/error.hpp"
#include "twinbed/real/mpi.hpp"

namespace twinbed::real::detail {

// Every rank's `bytes` bytes at `data`, concatenated in rank order, on rank 0 of `comm`; empty on the
// others. Collective. The byte counts are exchanged first, so every rank agrees whether they fit one
// MPI_Gatherv: Error on every rank alike when their total exceeds it (2 GiB).
inline std::vector<char> gather_bytes_to_0(MPI_Comm comm, const void* data, std::int64_t bytes) {
  int size = 0, rank = 0;
  MPI_CHECK(MPI_Comm_size(comm, &size));
  MPI_CHECK(MPI_Comm_rank(comm, &rank));
  std::vector<std::int64_t> sizes(static_cast<std::size_t>(size));
  MPI_CHECK(MPI_Allgather(&bytes, 1, MPI_INT64_T, sizes.data(), 1, MPI_INT64_T, comm));
  std::int64_t total = 0;
  for (std::int64_t s : sizes) total += s;
  if (total > INT32_MAX)
    throw Error("gathering " + std::to_string(total) + " bytes of records on rank 0: more than one MPI_Gatherv carries");
  std::vector<int> counts(sizes.size()), displs(sizes.size());
  int at = 0;
  for (std::size_t r = 0; r < sizes.size(); ++r) {
    counts[r] = static_cast<int>(sizes[r]);
    displs[r] = at;
    at += counts[r];
  }
  std::vector<char> out;
  if (rank == 0) out.resize(static_cast<std::size_t>(total));
  MPI_CHECK(MPI_Gatherv(data, static_cast<int>(bytes), MPI_BYTE, out.data(), counts.data(), displs.data(), MPI_BYTE, 0, comm));
  return out;
}

}  // namespace twinbed::real::detail
