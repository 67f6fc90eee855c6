#include "twinbed/core/json_read.hpp"

#include <algorithm>
#include <cmath>
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
  if (!duplicate.empty()) throw ConfigError(where, "key " + json(duplicate).dump() + " appears twice in one object");
  return j;
}

json read_json_file(const std::string& file, const std::string& what) {
  std::error_code ec;
  if (std::filesystem::is_directory(file, ec)) throw ConfigError(file, "is a folder, not a " + what + " file");
  std::ifstream in(file, std::ios::binary);
  if (!in) throw ConfigError(file, "cannot open the " + what + " file");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw ConfigError(file, "cannot read the " + what + " file");
  return parse_json_text(text, file);
}

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
  if (v.is_string()) return "the string " + quoted(v.get<std::string>());
  if (v.is_number() || v.is_boolean()) return v.dump();
  return std::string("a JSON ") + v.type_name();
}

std::string quoted(const std::string& text) {
  const std::string shown = text.size() > 80 ? text.substr(0, 77) + "..." : text;
  // JSON's escapes: control characters (a newline) and quotes print as \n, \"; invalid UTF-8 is replaced.
  return json(shown).dump(-1, ' ', false, json::error_handler_t::replace);
}

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
      fail(child(path, key), "unknown key " + quoted(key) + "; accepted keys here: " + join(accepted) + hint);
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
    fail(path, quoted(pointer) + " is not a JSON pointer like \"/layout/pp\": " +
                   (pointer.empty() || pointer[0] != '/' ? "it must start with '/'"
                                                         : "a '~' must be followed by 0 (for '~') or 1 (for '/')"));
  }
  if (ptr.empty()) fail(path, "the pointer must name a field, like \"/layout/pp\", not the whole config");
  const json::json_pointer parent = ptr.parent_pointer();
  const json* container = find_pointer(doc, parent.to_string());
  if (container == nullptr || !(container->is_object() || container->is_array())) {
    fail(path, quoted(pointer) + " does not point into the config: " +
                   quoted(parent.empty() ? std::string("/") : parent.to_string()) + " is not an object or array of it");
  }
  if (container->is_array() && find_pointer(doc, pointer) == nullptr) {
    fail(path, quoted(pointer) + " names no element of " + quoted(parent.to_string()) + ", an array of " +
                   std::to_string(container->size()) + " (indices are written 0, 1, ...)");
  }
  return ptr;
}

}  // namespace twinbed::json_read
