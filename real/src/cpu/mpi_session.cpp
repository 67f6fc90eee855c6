#include <mpi.h>

#include <cstdlib>
#include <string>

#include "twinbed/real/mpi.hpp"

namespace twinbed::real {

void check_mpi(int code, const char* call, const char* file, int line) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) length = 0;
  throw Error(std::string(file) + ":" + std::to_string(line) + ": " + call + " failed: " +
              (length > 0 ? std::string(text, static_cast<std::size_t>(length)) : "MPI error " + std::to_string(code)));
}

bool mpi_built() { return true; }

MpiSession::MpiSession() { start(nullptr, nullptr); }
MpiSession::MpiSession(int* argc, char*** argv) { start(argc, argv); }

void MpiSession::start(int* argc, char*** argv) {
  int finalized = 0;
  MPI_CHECK(MPI_Finalized(&finalized));
  if (finalized) throw Error("MPI was already finalized in this process; it can be initialised only once per process");
  int initialized = 0;
  MPI_CHECK(MPI_Initialized(&initialized));
  if (!initialized) {
    // Before MPI_Init, errors abort by default, so a failing MPI_Init may not return at all; there is
    // nothing the library can do about that.
    MPI_CHECK(MPI_Init(argc, argv));
    owns_ = true;
  }
  // From here on, errors come back as codes that MPI_CHECK turns into exceptions.
  MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
  MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size_));
}

MpiSession::~MpiSession() {
  if (!owns_) return;
  int finalized = 0;
  // A destructor cannot throw: a failing finalize has nothing left to report to.
  if (MPI_Finalized(&finalized) == MPI_SUCCESS && !finalized) MPI_Finalize();
}

void MpiSession::abort_job(int code) const {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::abort();  // MPI_Abort does not return; this only tells the compiler so
}

}  // namespace twinbed::real
