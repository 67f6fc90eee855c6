// Collectives on a program's own data: the shared schedules (collective_algorithms.hpp) executed over
// MPI point-to-point on the caller's buffers, exactly as the measured collectives run them
// (collectives.hpp), for programs that need the result and not a timing: data-parallel training
// (train/) reduces its real gradients through these.
//
// Every call is collective over MPI_COMM_WORLD (an MpiSession must be alive): all ranks call it with
// the same sizes, in the same order, from the thread that created the session. Messages travel on a
// private duplicate of the world communicator. A schedule is built once per (op, size) and kept.
// Without MPI in the build the constructor throws Unavailable.
//
// Results are deterministic: the same inputs give bit-identical outputs on every run (each schedule
// fixes the order of its additions), and an all-reduce leaves the same bits on every rank.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace twinbed::real {

class DataCollectives {
 public:
  // `algorithm`: a registered schedule that implements all-reduce and all-gather (ring, rhd, direct,
  // hierarchical; tree has no all-gather); ranks_per_host for hierarchical (0 = one host). The
  // constructor checks only that the name is registered: an op the schedule lacks throws
  // InvalidArgument at the first call that needs it. Throws UnknownName listing the algorithms,
  // Unavailable without MPI, Error when MPI is not running.
  explicit DataCollectives(std::string algorithm, int ranks_per_host = 0);
  ~DataCollectives();
  DataCollectives(const DataCollectives&) = delete;
  DataCollectives& operator=(const DataCollectives&) = delete;

  int rank() const;
  int ranks() const;

  // Sums `data` over the ranks, in place.
  void all_reduce(std::span<float> data);
  // all[r·n, (r+1)·n) = rank r's `mine` (n = mine.size()); all.size() must be ranks()·n
  // (InvalidArgument naming both otherwise, thrown alike on every rank before any message).
  void all_gather(std::span<const float> mine, std::span<float> all);

  // Bytes this rank has sent through this object so far: the schedules' messages, as executed.
  std::int64_t bytes_sent() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace twinbed::real
