// The parts of the CUDA backend's API that need no GPU: built in every configuration, with or without
// CUDA, so callers and tests see one API.
#include <algorithm>
#include <cctype>
#include <string>
#include <vector>

#include "common.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/real/cuda_check.hpp"
#include "twinbed/real/cuda_collectives.hpp"

namespace twinbed::real {

void throw_library_error(const char* library, const char* call, const char* file, int line, const char* code_name,
                         const std::string& message) {
  throw Error(kernels::library_failure_text(library, call, file, line, code_name, message));
}

std::vector<std::string> nccl_algo_names() {
  return {"Ring", "Tree", "CollnetDirect", "CollnetChain", "NVLS", "NVLSTree", "PAT"};
}

namespace cuda_detail {

std::string canonical_nccl_algo(const std::string& name) {
  if (name.empty()) return name;
  auto lower = [](std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return s;
  };
  for (const std::string& known : nccl_algo_names())
    if (lower(known) == lower(name)) return known;
  throw UnknownName("NCCL algorithm (NCCL_ALGO)", name, nccl_algo_names());
}

}  // namespace cuda_detail

std::vector<CollectiveRow> measure_collectives_cuda(CollectiveOp op, const std::string& algorithm,
                                                    std::vector<Bytes> sizes, int root, int ranks_per_host,
                                                    const MeasureOptions& options) {
  CudaMeasureOptions with_defaults;
  static_cast<MeasureOptions&>(with_defaults) = options;
  return measure_collectives_cuda(op, algorithm, std::move(sizes), root, ranks_per_host, with_defaults);
}

void add_floats_cpu(std::span<float> dst, std::span<const float> src) {
  if (dst.size() != src.size())
    throw InvalidArgument("add_floats: dst has " + std::to_string(dst.size()) + " floats but src " +
                          std::to_string(src.size()));
  for (std::size_t i = 0; i < dst.size(); ++i) dst[i] += src[i];
}

}  // namespace twinbed::real
