// GoogleTest main for tests run under mpirun: one MpiSession around the whole run; rank 0 prints the
// usual report, other ranks print only their failures (prefixed with the rank); the process fails
// when the tests failed on any rank.
#include <mpi.h>

#include <cstdio>
#include <memory>

#include <gtest/gtest.h>

#include "twinbed/real/mpi.hpp"

namespace {

class FailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: failure\n%s\n", rank_, result.file_name() ? result.file_name() : "?",
                 result.line_number(), result.summary());
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  twinbed::real::MpiSession mpi(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  if (mpi.rank() != 0) {
    ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
    std::unique_ptr<::testing::TestEventListener> quiet(listeners.Release(listeners.default_result_printer()));
    listeners.Append(std::make_unique<FailurePrinter>(mpi.rank()).release());  // gtest takes ownership
  }
  const int local_failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  int any_failed = 0;
  MPI_CHECK(MPI_Allreduce(&local_failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
  if (mpi.rank() == 0 && any_failed && !local_failed) std::fprintf(stderr, "tests failed on another rank\n");
  return any_failed ? 1 : 0;
}
