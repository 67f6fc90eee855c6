// What the real backend can use on this machine. Probing never throws and never crashes: a build
// without CUDA, a machine without a GPU or a broken driver all come back as a filled HardwareInfo.
#pragma once

#include <string>

namespace twinbed::real {

struct HardwareInfo {
  bool cuda_built = false;   // compiled with nvcc
  bool nccl_built = false;   // linked against NCCL
  int gpus = 0;              // CUDA devices visible now
  std::string gpu_name;      // device 0, when there is one
  int nccl_version = 0;      // e.g. 22803 for 2.28.3; 0 when not built
  std::string note;          // why gpus == 0, in one line
};

HardwareInfo probe_hardware();

}  // namespace twinbed::real
