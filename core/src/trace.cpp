#include "twinbed/core/trace.hpp"

namespace twinbed {

std::string to_string(SpanKind k) {
  switch (k) {
    case SpanKind::Gemm: return "gemm";
    case SpanKind::Attention: return "attention";
    case SpanKind::MemoryBound: return "memory_bound";
    case SpanKind::Optimizer: return "optimizer";
    case SpanKind::Collective: return "collective";
    case SpanKind::SendRecv: return "sendrecv";
    case SpanKind::Other: return "other";
  }
  return "other";
}

std::string to_string(StreamKind s) {
  switch (s) {
    case StreamKind::Compute: return "compute";
    case StreamKind::Collective: return "collective";
    case StreamKind::P2P: return "p2p";
  }
  return "compute";
}

}  // namespace twinbed
