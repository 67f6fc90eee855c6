// The seam both backends implement: run one training iteration of a Plan, return its Trace.
// The simulator (sim::SimBackend) and the real backends (real::CpuBackend over MPI, real::CudaBackend with NCCL) take
// the same input and give the same output, so report() and compare() never ask which one ran; they
// execute a Plan by the same rules (plan_exec.hpp).
//
// Backends are found by name (STYLE: registries, not enums): a BackendRegistry maps a name to a factory.
// Core cannot know the backends (they depend on it), so each adds itself — sim::add_sim_backend ("sim"),
// real::add_real_backends ("real-cpu", "real-cuda") — into a registry whoever runs plans builds
// (the CLI); an unknown name is an UnknownName listing the known ones.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "twinbed/core/experiment.hpp"
#include "twinbed/core/plan.hpp"
#include "twinbed/core/registry.hpp"
#include "twinbed/core/topology.hpp"
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

// What a backend is made from: the experiment (its simulation section, collective algorithm and
// measured profile) and the topology its plans are built for. Borrowed: both must outlive the backend.
struct BackendSetup {
  const Experiment* experiment = nullptr;
  const Topology* topology = nullptr;
  // false: only step time and memory are needed (sweeps); a backend may skip recording spans.
  bool record_spans = true;
};

// Makes a backend; throws what its constructor throws (ConfigError for a bad experiment, Unavailable
// when the backend cannot exist in this build or on this machine).
using BackendFactory = std::function<std::unique_ptr<Backend>(const BackendSetup&)>;
using BackendRegistry = Registry<BackendFactory>;

}  // namespace twinbed
