#include "twinbed/core/units.hpp"

#include <cctype>
#include <cmath>

#include "twinbed/core/error.hpp"

namespace twinbed {

UnknownName::UnknownName(const std::string& what, const std::string& name,
                         const std::vector<std::string>& known)
    : Error([&] {
        std::string msg = "unknown " + what + " '" + name + "'; known: ";
        for (std::size_t i = 0; i < known.size(); ++i) msg += (i ? ", " : "") + known[i];
        return msg;
      }()) {}

Time transfer_time(Bytes bytes, BytesPerSec bw) { return drain_time(static_cast<double>(bytes), bw); }

Time drain_time(double bytes, BytesPerSec bw) {
  if (bytes <= 0) return Time{};
  if (!(bw > 0)) throw InvalidArgument("transfer time: bandwidth must be positive");
  // Multiply before dividing: 100 B at 100 GB/s is then exactly 1000 ps, not 1000.0000000000001.
  return Time::ps(static_cast<std::int64_t>(std::ceil(bytes * 1e12 / bw)));
}

Bytes parse_size(const std::string& text) {
  std::size_t pos = 0;
  while (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos]))) ++pos;
  if (pos == 0) throw InvalidArgument("size '" + text + "': expected a number with an optional K, M or G suffix");
  Bytes value = std::stoll(text.substr(0, pos));
  std::string suffix = text.substr(pos);
  if (suffix.empty() || suffix == "B") return value;
  if (suffix == "K" || suffix == "KB" || suffix == "KiB") return value * KiB;
  if (suffix == "M" || suffix == "MB" || suffix == "MiB") return value * MiB;
  if (suffix == "G" || suffix == "GB" || suffix == "GiB") return value * GiB;
  throw InvalidArgument("size '" + text + "': unknown suffix '" + suffix + "' (accepted: K, M, G)");
}

std::string format_size(Bytes b) {
  if (b >= GiB && b % GiB == 0) return std::to_string(b / GiB) + "G";
  if (b >= MiB && b % MiB == 0) return std::to_string(b / MiB) + "M";
  if (b >= KiB && b % KiB == 0) return std::to_string(b / KiB) + "K";
  return std::to_string(b);
}

}  // namespace twinbed
