// The MPI process environment of the CPU real backend: one RAII session per process, and MPI_CHECK.
//
// MPI imposes the one piece of process-wide state twinbed tolerates: MPI_Init may run once per process
// and MPI_Finalize once after it, and nothing can re-initialise MPI afterwards. MpiSession owns that
// lifetime; create exactly one, in main (or a test main), before anything that communicates, and let it
// die last. Every communicating function of twinbed::real works on MPI_COMM_WORLD (through a private
// duplicate), and is *collective*: all ranks must call it with the same arguments.
//
// This header does not include <mpi.h>: callers of the library need no MPI include path. Code that
// makes MPI calls itself includes <mpi.h> and may then use MPI_CHECK.
//
// When twinbed is configured without MPI (TWINBED_HAVE_MPI == 0) the same API exists, and MpiSession's
// constructor throws Unavailable saying how to get MPI.
#pragma once

#include "twinbed/core/error.hpp"

namespace twinbed::real {

// Throws twinbed::Error("<file>:<line>: <call> failed: <MPI_Error_string>") unless `code` is
// MPI_SUCCESS. Used through MPI_CHECK; works only on communicators whose error handler returns codes
// (MpiSession sets MPI_ERRORS_RETURN on MPI_COMM_WORLD, and duplicates inherit it).
void check_mpi(int code, const char* call, const char* file, int line);

// True when twinbed was compiled with MPI (TWINBED_HAVE_MPI).
bool mpi_built();

// Initialises MPI on construction and finalises it on destruction.
// - If MPI is already initialised (by a host program), the session joins without owning it and does
//   not finalise it.
// - Throws Error when MPI was already finalised in this process (MPI cannot start twice), Unavailable
//   when twinbed was built without MPI.
// - Sets MPI_ERRORS_RETURN on MPI_COMM_WORLD so that failures become exceptions instead of aborts.
// Not copyable or movable. Not thread-safe: create and destroy it on the main thread (MPI_THREAD_SINGLE
// is all the library needs).
//
// An exception escaping on one rank leaves its peers waiting in a collective. Only main can decide what
// to do; the usual answer, after printing the message, is MPI_Abort(MPI_COMM_WORLD, code), which
// ends every rank of the job.
class MpiSession {
 public:
  MpiSession();                        // MPI_Init(nullptr, nullptr)
  MpiSession(int* argc, char*** argv);  // MPI_Init(argc, argv)
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  int rank() const { return rank_; }  // in MPI_COMM_WORLD
  int size() const { return size_; }  // of MPI_COMM_WORLD
  bool owns_mpi() const { return owns_; }

  // For main only, after it has reported an error: MPI_Abort(MPI_COMM_WORLD, code), which ends every
  // rank of the job (a rank that just returned would leave its peers waiting forever). The library
  // itself never calls it.
  [[noreturn]] void abort_job(int code) const;

 private:
  void start(int* argc, char*** argv);
  int rank_ = 0;
  int size_ = 1;
  bool owns_ = false;
};

}  // namespace twinbed::real

// MPI_CHECK(MPI_Send(...)): throws twinbed::Error naming the call, file and line on failure.
#ifndef MPI_CHECK
#define MPI_CHECK(call) ::twinbed::real::check_mpi((call), #call, __FILE__, __LINE__)
#endif
