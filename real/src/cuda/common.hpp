// Private helpers of the CUDA backend that need no CUDA header, built with or without CUDA.
#pragma once

#include <string>

namespace twinbed::real::cuda_detail {

// NCCL_ALGO's spelling of `name` (matched case-insensitively against nccl_algo_names()); "" stays "".
// Throws UnknownName listing nccl_algo_names().
std::string canonical_nccl_algo(const std::string& name);

}  // namespace twinbed::real::cuda_detail
