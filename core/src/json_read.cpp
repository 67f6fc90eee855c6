#include "twinbed/core/json_read.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string_view>

namespace twinbed::json_read {

namespace {

// nlohmann's messages start with a tag ("[json.exception.parse_error.101] "): what follows is the text.
std::string without_tag(const std::string& message) {
  if (message.rfind("[json.exception.", 0) == 0) {
    const std::size_t end = message.find("] ");
    if (end != std::string::npos) return message.substr(end + 2);
  }
  return message;
}

}  // namespace

json parse_json_text(const std::string& text, const std::string& where) {
  if (const std::size_t nul = text.find('\0'); nul != std::string::npos) {
    throw ConfigError(where, "a NUL byte at offset " + std::to_string(nul) + ": not a JSON text");
  }
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  const auto check = [&](int depth, json::parse_event_t event, json& parsed) {
    // Bounded nesting: configs are a few levels deep, and code that walks a value (printing it in an
    // error, copying it) recurses once per level.
    if (depth >= kMaxJsonDepth) {  // depth counts from 0 at the top level
      throw ConfigError(where, "values nested more than " + std::to_string(kMaxJsonDepth) + " levels deep: not a config");
    }
    if (event == json::parse_event_t::object_start) {
      open_objects.emplace_back();
    } else if (event == json::parse_event_t::object_end && !open_objects.empty()) {
      open_objects.pop_back();
    } else if (event == json::parse_event_t::key && !open_objects.empty() && duplicate.empty() &&
               !open_objects.back().insert(parsed.get<std::string>()).second) {
      duplicate = parsed.get<std::string>();
    }
    return true;
  };
  json j;
  try {
    j = json::parse(text, check);
  } catch (const json::out_of_range& e) {
    throw ConfigError(where, "a number out of range: " + without_tag(e.what()));
  } catch (const json::exception& e) {
    throw ConfigError(where, "malformed JSON: " + without_tag(e.what()));
  }
  if (!duplicate.empty()) throw ConfigError(where, "key " + json_read::quoted(duplicate) + " appears twice in one object");
  return j;
}

namespace {

// "an experiment", "a topology".
std::string with_article(const std::string& noun) {
  const bool vowel = !noun.empty() && std::string_view("aeiou").find(noun[0]) != std::string_view::npos;
  return (vowel ? "an " : "a ") + noun;
}

}  // namespace

std::string unreadable_reason(const std::filesystem::path& file, const std::string& what) {
  namespace fs = std::filesystem;
  const std::string role = with_article(what) + " file";
  std::error_code ec;
  const fs::file_status status = fs::status(file, ec);  // follows links
  if (status.type() == fs::file_type::not_found) return "cannot open the " + what + " file: it does not exist";
  if (ec) return "cannot read the " + what + " file: " + ec.message();
  if (status.type() == fs::file_type::directory) return "is a folder, not " + role;
  if (status.type() != fs::file_type::regular) return "is not a regular file (a device, FIFO or socket), so not " + role;
  const std::uintmax_t size = fs::file_size(file, ec);
  if (ec) return "cannot read the " + what + " file: " + ec.message();
  if (size > kMaxInputFileBytes) {
    return "is " + std::to_string(size) + " bytes; " + role + " is at most " + std::to_string(kMaxInputFileBytes >> 20) +
           " MiB (" + std::to_string(kMaxInputFileBytes) + " bytes)";
  }
  return "";
}

std::string read_text_file(const std::filesystem::path& file, const std::string& what) {
  if (const std::string why = unreadable_reason(file, what); !why.empty()) throw ConfigError(file.string(), why);
  std::ifstream in(file, std::ios::binary);
  if (!in) throw ConfigError(file.string(), "cannot open the " + what + " file");
  // Bounded even if the file grew since it was checked.
  std::string text;
  char buf[1 << 16];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    text.append(buf, static_cast<std::size_t>(in.gcount()));
    if (text.size() > kMaxInputFileBytes) throw ConfigError(file.string(), "grew beyond " + std::to_string(kMaxInputFileBytes >> 20) + " MiB while being read");
  }
  if (in.bad()) throw ConfigError(file.string(), "cannot read the " + what + " file");
  return text;
}

json read_json_file(const std::string& file, const std::string& what) { return parse_json_text(read_text_file(file, what), file); }

std::string child(const std::string& parent, const std::string& key) {
  std::string escaped;
  for (char c : key) {
    if (c == '~') {
      escaped += "~0";
    } else if (c == '/') {
      escaped += "~1";
    } else {
      escaped += c;
    }
  }
  return parent + "/" + escaped;
}

std::string child(const std::string& parent, std::size_t index) { return parent + "/" + std::to_string(index); }

void fail(const std::string& path, const std::string& message) {
  throw ConfigError(path.empty() ? "/" : path, message);
}

std::string got(const json& v) {
  if (v.is_string()) return "the string " + json_read::quoted(v.get<std::string>());
  if (v.is_number() || v.is_boolean()) return v.dump();
  return std::string("a JSON ") + v.type_name();
}

namespace {

// How many bytes the UTF-8 character at text[i] takes, or 0 when the bytes there are not valid UTF-8
// (a stray continuation byte, a cut sequence, an overlong form, a surrogate, beyond U+10FFFF).
std::size_t utf8_length(std::string_view text, std::size_t i) {
  const auto at = [&](std::size_t k) { return i + k < text.size() ? static_cast<unsigned char>(text[i + k]) : 0u; };
  const unsigned c = at(0);
  if (c < 0x80) return 1;
  if (c < 0xc2 || c > 0xf4) return 0;
  const std::size_t n = c <= 0xdf ? 2 : c <= 0xef ? 3 : 4;
  // The second byte's range excludes overlong forms (E0, F0), surrogates (ED) and beyond U+10FFFF (F4).
  const unsigned lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80;
  const unsigned hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf;
  if (at(1) < lo || at(1) > hi) return 0;
  for (std::size_t k = 2; k < n; ++k) {
    if (at(k) < 0x80 || at(k) > 0xbf) return 0;
  }
  return n;
}

// `text` with what could break a line escaped as JSON escapes it: control characters (\n, \t, \u0001),
// DEL, and the Unicode line breaks U+0085, U+2028 and U+2029; with `quotes`, also double quotes and
// backslashes. Invalid UTF-8 becomes U+FFFD, so a message is valid UTF-8 wherever it is written.
std::string escape(std::string_view text, bool quotes) {
  std::string out;
  out.reserve(text.size());
  const auto hex = [&](unsigned code) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "\\u%04x", code);
    out += buf;
  };
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    const std::size_t n = utf8_length(text, i);
    const std::string_view ch = text.substr(i, n);
    if (n == 0) out += "\xef\xbf\xbd";  // U+FFFD, for one invalid byte
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) hex(c);
    else if (quotes && (c == '"' || c == '\\')) (out += '\\') += static_cast<char>(c);
    else if (ch == "\u0085" || ch == "\u2028" || ch == "\u2029") hex(ch == "\u0085" ? 0x85 : ch == "\u2028" ? 0x2028 : 0x2029);
    else out += ch;
    i += n == 0 ? 1 : n;
  }
  return out;
}

}  // namespace

std::string one_line(const std::string& text) { return escape(text, false); }

std::string quoted(const std::string& text, std::size_t cut_at) {
  std::string_view part = text;
  bool cut = false;
  if (cut_at >= 3 && text.size() > cut_at) {
    std::size_t end = cut_at - 3;
    while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xc0) == 0x80) --end;  // not inside a character
    part = part.substr(0, end);
    cut = true;
  }
  return "\"" + escape(part, true) + (cut ? "...\"" : "\"");
}

std::string shown(const json& v) {
  if (v.is_string()) return json_read::quoted(v.get<std::string>());
  const std::string text = v.dump(-1, ' ', false, json::error_handler_t::replace);  // one line: strings in it are escaped
  return text.size() > 80 ? text.substr(0, 77) + "..." : text;
}

std::string number_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  if (std::strtod(buf, nullptr) != v) std::snprintf(buf, sizeof buf, "%.17g", v);  // 1048576, not 1.04858e+06
  std::string s = buf;
  // "1e+09" -> "1e9", "1e-06" -> "1e-6".
  if (const std::size_t e = s.find('e'); e != std::string::npos) {
    std::size_t digits = e + 1;
    if (s[digits] == '+') s.erase(digits, 1);
    else if (s[digits] == '-') ++digits;
    while (digits + 1 < s.size() && s[digits] == '0') s.erase(digits, 1);
  }
  return s;
}

std::string number_range(double min, double max) { return "[" + number_text(min) + ", " + number_text(max) + "]"; }

std::string join(const std::vector<std::string>& names) {
  std::string s;
  for (std::size_t i = 0; i < names.size(); ++i) s += (i ? ", " : "") + names[i];
  return s;
}

void require_object(const json& v, const std::string& path) {
  if (!v.is_object()) fail(path, "expected a JSON object, got " + got(v));
}

void check_keys(const json& obj, const std::string& path, const std::vector<std::string>& accepted,
                const std::string& hint) {
  for (const auto& [key, value] : obj.items()) {
    if (std::find(accepted.begin(), accepted.end(), key) == accepted.end()) {
      fail(child(path, key), "unknown key " + json_read::quoted(key) + "; accepted keys here: " + join(accepted) + hint);
    }
  }
}

const json& required(const json& obj, const std::string& path, const std::string& key, const std::string& what) {
  auto it = obj.find(key);
  if (it == obj.end()) fail(child(path, key), "required key is missing" + (what.empty() ? "" : " (" + what + ")"));
  return *it;
}

std::string read_string(const json& v, const std::string& path) {
  if (!v.is_string()) fail(path, "expected a string, got " + got(v));
  return v.get<std::string>();
}

std::string read_name(const json& v, const std::string& path) {
  std::string s = read_string(v, path);
  if (s.empty()) fail(path, "expected a non-empty name");
  return s;
}

std::int64_t read_int(const json& v, const std::string& path, std::int64_t min, std::int64_t max) {
  const std::string range = "an integer in " + std::to_string(min) + ".." + std::to_string(max);
  if (!v.is_number_integer()) fail(path, "expected " + range + ", got " + got(v));
  // Unsigned first: a value above INT64_MAX must not wrap into range.
  if (v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(max)) {
    fail(path, "expected " + range + ", got " + got(v));
  }
  const std::int64_t n = v.get<std::int64_t>();
  if (n < min || n > max) fail(path, "expected " + range + ", got " + got(v));
  return n;
}

double read_number(const json& v, const std::string& path, const std::string& range) {
  if (!v.is_number()) fail(path, "expected " + range + ", got " + got(v));
  const double d = v.get<double>();
  if (!std::isfinite(d)) fail(path, "expected " + range + ", got " + got(v));
  return d;
}

bool read_bool(const json& v, const std::string& path) {
  if (!v.is_boolean()) fail(path, "expected true or false, got " + got(v));
  return v.get<bool>();
}

const json* find_pointer(const json& doc, std::string_view pointer) {
  const json* at = &doc;
  while (!pointer.empty() && at != nullptr) {
    pointer.remove_prefix(1);  // the '/'
    const std::size_t end = std::min(pointer.find('/'), pointer.size());
    std::string token(pointer.substr(0, end));
    pointer.remove_prefix(end);
    for (std::size_t k = 0; (k = token.find("~1", k)) != std::string::npos;) token.replace(k, 2, "/");
    for (std::size_t k = 0; (k = token.find("~0", k)) != std::string::npos; ++k) token.replace(k, 2, "~");
    if (at->is_object()) {
      const auto it = at->find(token);
      at = it == at->end() ? nullptr : &*it;
      continue;
    }
    const bool index = !token.empty() && token.size() <= 9 && (token == "0" || token[0] != '0') &&
                       std::all_of(token.begin(), token.end(), [](char c) { return c >= '0' && c <= '9'; });
    const std::size_t i = index ? std::stoul(token) : 0;
    at = at->is_array() && index && i < at->size() ? &(*at)[i] : nullptr;
  }
  return at;
}

json::json_pointer settable_pointer(const json& doc, const std::string& pointer, const std::string& path) {
  json::json_pointer ptr;
  try {
    ptr = json::json_pointer(pointer);
  } catch (const json::exception&) {
    fail(path, json_read::quoted(pointer) + " is not a JSON pointer like \"/layout/pp\": " +
                   (pointer.empty() || pointer[0] != '/' ? "it must start with '/'"
                                                         : "a '~' must be followed by 0 (for '~') or 1 (for '/')"));
  }
  if (ptr.empty()) fail(path, "the pointer must name a field, like \"/layout/pp\", not the whole config");
  const json::json_pointer parent = ptr.parent_pointer();
  const json* container = find_pointer(doc, parent.to_string());
  if (container == nullptr || !(container->is_object() || container->is_array())) {
    fail(path, json_read::quoted(pointer) + " does not point into the config: " +
                   json_read::quoted(parent.empty() ? std::string("/") : parent.to_string()) + " is not an object or array of it");
  }
  if (container->is_array() && find_pointer(doc, pointer) == nullptr) {
    fail(path, json_read::quoted(pointer) + " names no element of " + json_read::quoted(parent.to_string()) + ", an array of " +
                   std::to_string(container->size()) + " (indices are written 0, 1, ...)");
  }
  return ptr;
}

}  // namespace twinbed::json_read
