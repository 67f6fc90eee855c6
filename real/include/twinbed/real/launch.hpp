// Starting the ranks of the CPU real backend.
//
// The flow a command such as `twinbed collectives --backend real --ranks N` follows:
//
//   int main(int argc, char** argv) {
//     ...parse flags...
//     if (!real::in_mpi_job())                             // started by hand: become N ranks
//       return real::relaunch_under_mpirun(N, argc, argv);  // same binary, same args, under mpirun
//     real::MpiSession mpi(&argc, &argv);                  // started by mpirun/srun: one rank of a job
//     try {
//       auto rows = real::measure_collectives(op, algorithm, sizes, root, ranks_per_host, options);
//       if (mpi.rank() == 0) { print format_collective_table(rows); }   // same rows on every rank
//       return any row has *wrong > 0 ? 1 : 0;             // a real run with wrong data is an error
//     } catch (const twinbed::InvalidArgument& e) {        // (and UnknownName) thrown alike on every
//       print on rank 0; return 1;                         //   rank before any communication: return
//     } catch (const std::exception& e) {                  // possibly on one rank only: peers may wait
//       print with the rank; mpi.abort_job(1);
//     }
//   }
//
// Under an external `mpirun`/`srun` (how users go multi-node) in_mpi_job() is true, so the binary
// joins the job and the job's size, not --ranks, decides the rank count (the CLI should say so if they
// differ). The relaunched child sees the launcher's environment and therefore never relaunches again.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace twinbed::real {

// Reads one environment variable; nullopt when unset. The default reads the process environment;
// tests pass a map.
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;
EnvLookup process_env();

// True when this process is a rank started by a launcher: OpenMPI's mpirun (OMPI_COMM_WORLD_SIZE),
// a PMIx launcher (PMIX_RANK), MPICH/Intel hydra or another PMI-1/2 launcher (PMI_RANK, PMI_SIZE), or
// a Slurm job step (SLURM_STEP_ID together with SLURM_PROCID: a batch script alone has no step id).
bool in_mpi_job(const EnvLookup& env = process_env());

// The first executable `name` in the PATH that `env` gives; nullopt when none.
std::optional<std::string> find_on_path(const std::string& name, const EnvLookup& env = process_env());

// The argument vector relaunch_under_mpirun executes: {mpirun, "-np", N, "--oversubscribe", "--map-by",
// "hwthread", "--bind-to", "hwthread:overload-allowed", ["--allow-run-as-root" when as_root], exe,
// args...}: rank r bound to logical CPU r mod CPUs (the simulator's shared cores, sim/core_sharing.hpp).
// OpenMPI's mpirun syntax.
// Throws InvalidArgument when ranks < 1.
std::vector<std::string> mpirun_command(const std::string& mpirun, int ranks, bool as_root, const std::string& exe,
                                        const std::vector<std::string>& args);

// Re-executes the running binary (/proc/self/exe, resolved now) with argv[1..argc) under
// mpirun_command's `mpirun -np ranks --oversubscribe ...` (+ --allow-run-as-root when the effective
// uid is 0), waits for it and returns its exit status (128 + signal number when it was killed by a
// signal).
// Output and input stay the caller's terminal. Blocks until the job ends.
// Throws InvalidArgument when ranks < 1; Unavailable("mpirun not found: ...") when mpirun is not on
// PATH; Error when the process cannot be started, or when it is called inside an MPI job (it would
// start jobs recursively). Never exits, never prints.
int relaunch_under_mpirun(int ranks, int argc, char** argv);

}  // namespace twinbed::real
