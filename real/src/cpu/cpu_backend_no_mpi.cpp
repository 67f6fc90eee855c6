// Built instead of cpu_backend.cpp when CMake found no MPI: the same API, saying when used how to get
// the CPU real backend.
#include <utility>

#include "twinbed/core/error.hpp"
#include "twinbed/real/cpu_backend.hpp"

namespace twinbed::real {

struct CpuBackend::Impl {};

CpuBackend::CpuBackend(CpuBackendOptions options) : options_(std::move(options)) {
  validate(options_);
  throw Unavailable(
      "twinbed was built without MPI, so the CPU real backend is absent: install an MPI (Debian/Ubuntu: "
      "apt-get install libopenmpi-dev openmpi-bin) and configure again");
}

CpuBackend::~CpuBackend() = default;

Trace CpuBackend::run(const Plan&) { throw Unavailable("twinbed was built without MPI: no CPU real backend"); }

Trace run_plan_on_cpu(const Plan& plan, const CpuBackendOptions& options) { return CpuBackend(options).run(plan); }

}  // namespace twinbed::real
