#include "twinbed/core/units.hpp"

#include <cctype>
#include <cmath>
#include <cstdio>

#include "twinbed/core/error.hpp"

namespace twinbed {

UnknownName::UnknownName(const std::string& what, const std::string& name,
                         const std::vector<std::string>& known)
    : Error([&] {
        std::string msg = "unknown " + what + " '" + name + "'; known: ";
        for (std::size_t i = 0; i < known.size(); ++i) msg += (i ? ", " : "") + known[i];
        return msg;
      }()) {}

void throw_beyond_clock(double seconds) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3g s", seconds);
  throw InvalidArgument(std::string("a duration of ") + buf +
                        " is beyond twinbed's clock (int64 picoseconds: about 106 days); a size, bandwidth or latency is out of "
                        "proportion");
}

Time transfer_time(Bytes bytes, BytesPerSec bw) { return drain_time(static_cast<double>(bytes), bw); }

Time drain_time(double bytes, BytesPerSec bw) {
  if (bytes <= 0) return Time{};
  if (!(bw > 0)) throw InvalidArgument("transfer time: bandwidth must be positive");
  // Multiply before dividing: 100 B at 100 GB/s is then exactly 1000 ps, not 1000.0000000000001.
  const double ps = std::ceil(bytes * 1e12 / bw);
  if (!(ps < kMaxPicoseconds)) throw_beyond_clock(ps * 1e-12);
  return Time::ps(static_cast<std::int64_t>(ps));
}

Bytes parse_size(const std::string& text) {
  std::size_t pos = 0;
  while (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos]))) ++pos;
  if (pos == 0) throw InvalidArgument("size '" + text + "': expected a number with an optional K, M or G suffix");
  const std::string suffix = text.substr(pos);
  Bytes unit = 0;
  if (suffix.empty() || suffix == "B") unit = 1;
  else if (suffix == "K" || suffix == "KB" || suffix == "KiB") unit = KiB;
  else if (suffix == "M" || suffix == "MB" || suffix == "MiB") unit = MiB;
  else if (suffix == "G" || suffix == "GB" || suffix == "GiB") unit = GiB;
  else throw InvalidArgument("size '" + text + "': unknown suffix '" + suffix + "' (accepted: K, M, G)");
  // Up to 2^50 bytes (1 PiB): far above any buffer, and its timings stay within the clock.
  constexpr Bytes kMaxSize = Bytes{1} << 50;
  const std::string digits = text.substr(0, pos);
  const Bytes value = digits.size() > 16 ? kMaxSize + 1 : std::stoll(digits);
  if (value > kMaxSize / unit) throw InvalidArgument("size '" + text + "': larger than 1 PiB (2^50 bytes), the most accepted");
  return value * unit;
}

std::string format_size(Bytes b) {
  if (b >= GiB && b % GiB == 0) return std::to_string(b / GiB) + "G";
  if (b >= MiB && b % MiB == 0) return std::to_string(b / MiB) + "M";
  if (b >= KiB && b % KiB == 0) return std::to_string(b / KiB) + "K";
  return std::to_string(b);
}

}  // namespace twinbed
