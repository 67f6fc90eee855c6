// Launching the CPU backend's ranks, without MPI in this process.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "twinbed/core/error.hpp"
#include "twinbed/real/launch.hpp"
#include "twinbed/real/mpi.hpp"

namespace twinbed::real {
namespace {

EnvLookup fake_env(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

// Sets an environment variable for one scope, restoring the old value after.
class ScopedEnv {
 public:
  ScopedEnv(std::string name, const char* value) : name_(std::move(name)) {
    if (const char* old = std::getenv(name_.c_str())) old_ = old;
    if (value) ::setenv(name_.c_str(), value, 1);
    else ::unsetenv(name_.c_str());
  }
  ~ScopedEnv() {
    if (old_) ::setenv(name_.c_str(), old_->c_str(), 1);
    else ::unsetenv(name_.c_str());
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

TEST(InMpiJob, FalseInAPlainProcess) { EXPECT_FALSE(in_mpi_job()); }

TEST(InMpiJob, RecognisesTheLaunchers) {
  EXPECT_FALSE(in_mpi_job(fake_env({})));
  EXPECT_TRUE(in_mpi_job(fake_env({{"OMPI_COMM_WORLD_SIZE", "4"}})));
  EXPECT_TRUE(in_mpi_job(fake_env({{"PMIX_RANK", "0"}})));
  EXPECT_TRUE(in_mpi_job(fake_env({{"PMI_RANK", "1"}})));
  EXPECT_TRUE(in_mpi_job(fake_env({{"PMI_SIZE", "2"}})));
  EXPECT_TRUE(in_mpi_job(fake_env({{"SLURM_PROCID", "0"}, {"SLURM_STEP_ID", "0"}})));
  // A Slurm batch script (no job step yet) is not an MPI job.
  EXPECT_FALSE(in_mpi_job(fake_env({{"SLURM_PROCID", "0"}, {"SLURM_JOB_ID", "17"}})));
}

TEST(FindOnPath, FindsExecutablesOnly) {
  EXPECT_EQ(find_on_path("sh", fake_env({{"PATH", "/nonexistent:/bin"}})), std::optional<std::string>("/bin/sh"));
  EXPECT_EQ(find_on_path("sh", fake_env({{"PATH", "/nonexistent"}})), std::nullopt);
  EXPECT_EQ(find_on_path("sh", fake_env({})), std::nullopt);
  EXPECT_EQ(find_on_path("passwd", fake_env({{"PATH", "/etc"}})), std::nullopt);  // a file, not executable
}

// Rank r bound to logical CPU r mod CPUs, as the simulator's shared cores place it (core_sharing.hpp).
TEST(MpirunCommand, IsOpenMpisSyntax) {
  const std::vector<std::string> binding = {"--map-by", "hwthread", "--bind-to", "hwthread:overload-allowed"};
  std::vector<std::string> expected = {"/usr/bin/mpirun", "-np", "3", "--oversubscribe"};
  expected.insert(expected.end(), binding.begin(), binding.end());
  expected.insert(expected.end(), {"/x/twinbed", "collectives", "--ranks", "3"});
  EXPECT_EQ(mpirun_command("/usr/bin/mpirun", 3, false, "/x/twinbed", {"collectives", "--ranks", "3"}), expected);
  expected = {"mpirun", "-np", "2", "--oversubscribe"};
  expected.insert(expected.end(), binding.begin(), binding.end());
  expected.insert(expected.end(), {"--allow-run-as-root", "/x/t"});
  EXPECT_EQ(mpirun_command("mpirun", 2, true, "/x/t", {}), expected);
  EXPECT_THROW(mpirun_command("mpirun", 0, false, "/x/t", {}), InvalidArgument);
}

TEST(Relaunch, WithoutMpirunIsUnavailableNotACrash) {
  ScopedEnv path("PATH", "/nonexistent");
  char name[] = "test_real";
  char* argv[] = {name, nullptr};
  try {
    relaunch_under_mpirun(2, 1, argv);
    FAIL() << "expected Unavailable";
  } catch (const Unavailable& e) {
    EXPECT_NE(std::string(e.what()).find("mpirun not found"), std::string::npos) << e.what();
  }
  EXPECT_THROW(relaunch_under_mpirun(0, 1, argv), InvalidArgument);
}

// Runs in the relaunched job only (the parent below sets the marker); skipped everywhere else.
TEST(RelaunchChild, SeesItsJob) {
  if (!std::getenv("TWINBED_TEST_RELAUNCH_CHILD")) GTEST_SKIP() << "only runs relaunched under mpirun";
  EXPECT_TRUE(in_mpi_job());
  const char* size = std::getenv("OMPI_COMM_WORLD_SIZE");
  ASSERT_NE(size, nullptr);
  EXPECT_EQ(std::string(size), "2");
}

TEST(Relaunch, RunsThisBinaryUnderMpirunAndReturnsItsExitCode) {
  if (!mpi_built()) GTEST_SKIP() << "built without MPI";
  if (!find_on_path("mpirun")) GTEST_SKIP() << "mpirun not on PATH";
  ScopedEnv marker("TWINBED_TEST_RELAUNCH_CHILD", "1");
  char name[] = "test_real";
  char pass[] = "--gtest_filter=RelaunchChild.SeesItsJob";
  char fail[] = "--gtest_filter=RelaunchChild.SeesItsJob:Relaunch.ChildFailure";
  char* argv_pass[] = {name, pass, nullptr};
  EXPECT_EQ(relaunch_under_mpirun(2, 2, argv_pass), 0);
  char* argv_fail[] = {name, fail, nullptr};
  EXPECT_NE(relaunch_under_mpirun(2, 2, argv_fail), 0);
}

// Fails on purpose when relaunched by the test above (its exit code must come back); skipped otherwise.
TEST(Relaunch, ChildFailure) {
  if (!std::getenv("TWINBED_TEST_RELAUNCH_CHILD") || !in_mpi_job()) GTEST_SKIP() << "only runs relaunched";
  ADD_FAILURE() << "deliberate failure in the relaunched child";
}

}  // namespace
}  // namespace twinbed::real
