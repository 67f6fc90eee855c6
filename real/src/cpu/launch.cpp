#include "twinbed/real/launch.hpp"

#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "twinbed/core/error.hpp"

extern char** environ;  // POSIX: the process environment, handed unchanged to the relaunched job

namespace twinbed::real {

EnvLookup process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
}

bool in_mpi_job(const EnvLookup& env) {
  // Each launcher leaves its mark in every rank's environment. Slurm sets SLURM_PROCID in a batch
  // script too, where no job step (and so no MPI job) exists yet; only srun's steps have a step id.
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"})
    if (env(name)) return true;
  return env("SLURM_STEP_ID").has_value() && env("SLURM_PROCID").has_value();
}

std::optional<std::string> find_on_path(const std::string& name, const EnvLookup& env) {
  const std::optional<std::string> path = env("PATH");
  if (!path) return std::nullopt;
  std::size_t begin = 0;
  while (begin <= path->size()) {
    std::size_t end = path->find(':', begin);
    if (end == std::string::npos) end = path->size();
    // POSIX: an empty PATH entry means the current directory.
    const std::string dir = end == begin ? "." : path->substr(begin, end - begin);
    const std::string candidate = dir + "/" + name;
    struct stat info {};
    if (::stat(candidate.c_str(), &info) == 0 && S_ISREG(info.st_mode) && ::access(candidate.c_str(), X_OK) == 0)
      return candidate;
    begin = end + 1;
  }
  return std::nullopt;
}

std::vector<std::string> mpirun_command(const std::string& mpirun, int ranks, bool as_root, const std::string& exe,
                                        const std::vector<std::string>& args) {
  if (ranks < 1) throw InvalidArgument("--ranks must be >= 1 (got " + std::to_string(ranks) + ")");
  // --oversubscribe: more ranks than cores is the normal case on a laptop or a small CI machine.
  // Rank r on logical CPU r mod CPUs, bound to it, however many ranks each CPU holds, as the simulator
  // places them (sim/core_sharing.hpp). Unbound, Open MPI leaves oversubscribed ranks to the kernel,
  // which keeps whichever two share a CPU together: on this 2-core VM 4 ranks (tp 2, pp 2) ran a step
  // in ~195 ms where the tensor-parallel partners had CPUs of their own and ~260 ms where they shared
  // one, at random from run to run.
  std::vector<std::string> cmd = {mpirun,     "-np",      std::to_string(ranks), "--oversubscribe",
                                  "--map-by", "hwthread", "--bind-to",           "hwthread:overload-allowed"};
  if (as_root) cmd.emplace_back("--allow-run-as-root");  // OpenMPI refuses root without it
  cmd.push_back(exe);
  cmd.insert(cmd.end(), args.begin(), args.end());
  return cmd;
}

int relaunch_under_mpirun(int ranks, int argc, char** argv) {
  if (ranks < 1) throw InvalidArgument("--ranks must be >= 1 (got " + std::to_string(ranks) + ")");
  if (in_mpi_job())
    throw Error("relaunch_under_mpirun called inside an MPI job; the job's ranks are already running");
  const std::optional<std::string> mpirun = find_on_path("mpirun");
  if (!mpirun)
    throw Unavailable(
        "mpirun not found: install openmpi-bin (Debian/Ubuntu: apt-get install openmpi-bin libopenmpi-dev), "
        "or start twinbed under your own mpirun/srun");

  // Resolve /proc/self/exe here: in the child it would name mpirun.
  std::array<char, 4096> exe{};
  const ssize_t length = ::readlink("/proc/self/exe", exe.data(), exe.size() - 1);
  if (length <= 0) throw Error(std::string("cannot resolve /proc/self/exe: ") + std::strerror(errno));

  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  const std::vector<std::string> cmd =
      mpirun_command(*mpirun, ranks, ::geteuid() == 0, std::string(exe.data(), static_cast<std::size_t>(length)), args);
  std::vector<char*> cargv;
  for (const std::string& s : cmd) cargv.push_back(const_cast<char*>(s.c_str()));  // posix_spawn's signature
  cargv.push_back(nullptr);

  pid_t pid = 0;
  const int spawned = ::posix_spawn(&pid, mpirun->c_str(), nullptr, nullptr, cargv.data(), environ);
  if (spawned != 0) throw Error("cannot start " + *mpirun + ": " + std::strerror(spawned));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw Error(std::string("waiting for mpirun failed: ") + std::strerror(errno));
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace twinbed::real
