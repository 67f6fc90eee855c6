// Built instead of the MPI sources when CMake found no MPI: the API stays the same and says, when used,
// how to get the CPU real backend.
#include <string>

#include "twinbed/real/calibrate.hpp"
#include "twinbed/real/collectives.hpp"
#include "twinbed/real/data_collectives.hpp"
#include "twinbed/real/mpi.hpp"

namespace twinbed::real {
namespace {

[[noreturn]] void unavailable() {
  throw Unavailable(
      "twinbed was built without MPI, so the CPU real backend is absent: install an MPI (Debian/Ubuntu: "
      "apt-get install libopenmpi-dev openmpi-bin) and configure again");
}

}  // namespace

void check_mpi(int code, const char* call, const char* file, int line) {
  if (code != 0) throw Error(std::string(file) + ":" + std::to_string(line) + ": " + call + " failed");
}

bool mpi_built() { return false; }

MpiSession::MpiSession() { start(nullptr, nullptr); }
MpiSession::MpiSession(int* argc, char*** argv) { start(argc, argv); }
void MpiSession::start(int*, char***) { unavailable(); }
MpiSession::~MpiSession() = default;
void MpiSession::abort_job(int) const { unavailable(); }

CollectiveRow measure_schedule(const Schedule&, const MeasureOptions&) { unavailable(); }
CollectiveRow measure_native(const CollectiveRequest&, const MeasureOptions&) { unavailable(); }
std::vector<CollectiveRow> measure_collectives(CollectiveOp, const std::string&, std::vector<Bytes>, int, int,
                                               const MeasureOptions&) {
  unavailable();
}

MachineProfile calibrate_cpu(const MpiSession&, const CalibrateOptions&) { unavailable(); }
GemmRates measure_gemm_rates(const MpiSession&, std::int64_t, std::int64_t, std::int64_t, double) { unavailable(); }
FlopsPerSec measure_gemm_rate(const MpiSession&, std::int64_t, std::int64_t, std::int64_t, double) { unavailable(); }

struct DataCollectives::Impl {};
DataCollectives::DataCollectives(std::string, int) { unavailable(); }
DataCollectives::~DataCollectives() = default;
int DataCollectives::rank() const { unavailable(); }
int DataCollectives::ranks() const { unavailable(); }
void DataCollectives::all_reduce(std::span<float>) { unavailable(); }
void DataCollectives::all_gather(std::span<const float>, std::span<float>) { unavailable(); }
std::int64_t DataCollectives::bytes_sent() const { unavailable(); }

}  // namespace twinbed::real
