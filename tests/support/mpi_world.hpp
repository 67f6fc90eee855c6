// For tests run under mpirun: the size of MPI_COMM_WORLD and this process's rank in it (an MpiSession
// must be alive; the test main holds one).
#pragma once

#include <mpi.h>

#include "twinbed/real/mpi.hpp"

namespace twinbed::test {

inline int world_size() {
  int n = 0;
  MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &n));
  return n;
}

inline int world_rank() {
  int r = 0;
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &r));
  return r;
}

}  // namespace twinbed::test
