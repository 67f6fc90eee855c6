// twinbed list: the registered collective algorithms and ops, topology presets, network models and
// device presets, and this machine's CUDA/NCCL, so users (and error messages) can point at them.
#include <cstdio>

#include "commands.hpp"
#include "twinbed/core/collective_algorithms.hpp"
#include "twinbed/core/device.hpp"
#include "twinbed/core/topology_builders.hpp"
#include "twinbed/real/hardware.hpp"
#include "twinbed/sim/network.hpp"

namespace twinbed::cli {

namespace {

template <class Registry>
void print_registry(const char* title, const Registry& registry) {
  std::printf("%s:\n", title);
  for (const auto& e : registry.entries()) std::printf("  %-16s %s\n", e.name.c_str(), e.description.c_str());
}

void run_list() {
  print_registry("collective algorithms", collective_algorithms());
  std::printf("collective ops:\n ");
  for (const auto& name : collective_op_names()) std::printf(" %s", name.c_str());
  std::printf("\n");
  print_registry("topology presets", topo::topology_presets());
  print_registry("network models", sim::network_models());
  std::printf("device presets:\n ");
  for (const auto& name : device_preset_names()) std::printf(" %s", name.c_str());
  std::printf("\n");
  real::HardwareInfo hw = real::probe_hardware();
  std::printf("this machine:\n  CUDA %s, NCCL %s, GPUs %d%s%s\n", hw.cuda_built ? "built" : "not built",
              hw.nccl_built ? std::to_string(hw.nccl_version).c_str() : "not built", hw.gpus,
              hw.gpu_name.empty() ? "" : (" (" + hw.gpu_name + ")").c_str(),
              hw.note.empty() ? "" : ("; " + hw.note).c_str());
}

}  // namespace

void add_list_command(CLI::App& app) {
  app.add_subcommand("list", "List the registered algorithms, topology presets, network models and devices")
      ->callback(run_list);
}

}  // namespace twinbed::cli
