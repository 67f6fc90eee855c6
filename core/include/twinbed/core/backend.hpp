// The seam both backends implement: run one training iteration of a Plan, return its Trace.
// The simulator (sim::SimBackend) and the real backends (real::CpuBackend over MPI, later CUDA) take
// the same input and give the same output, so report() and compare() never ask which one ran.
#pragma once

#include <string>

#include "twinbed/core/plan.hpp"
#include "twinbed/core/trace.hpp"

namespace twinbed {

class Backend {
 public:
  virtual ~Backend() = default;
  // "sim", "real-cpu", "real-cuda".
  virtual std::string name() const = 0;
  // Runs one iteration of `plan`. Throws InvalidArgument/ConfigError for a plan this backend cannot run
  // (e.g. ranks that differ from the machine's), Unavailable when hardware or a launcher is missing,
  // Error on a failure while running.
  virtual Trace run(const Plan& plan) = 0;
};

}  // namespace twinbed
