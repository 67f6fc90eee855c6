// Name -> factory registries. Algorithms, topologies, network models (and later techniques and
// planners) are found by name; an unknown name is an UnknownName error listing the known ones.
// A Registry is an ordinary object (no process-wide instance): whoever needs one builds it.
#pragma once

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "twinbed/core/error.hpp"

namespace twinbed {

template <class Value>
class Registry {
 public:
  struct Entry {
    std::string name;
    std::string description;
    Value value;
  };

  // `what` names the kind of thing in error messages ("collective algorithm", "topology preset").
  explicit Registry(std::string what) : what_(std::move(what)) {}

  // Throws InvalidArgument on a duplicate name.
  void add(std::string name, std::string description, Value value) {
    if (find(name)) throw InvalidArgument(what_ + " '" + name + "' is registered twice");
    entries_.push_back({std::move(name), std::move(description), std::move(value)});
  }

  // nullptr when absent.
  const Value* find(const std::string& name) const {
    auto it = std::find_if(entries_.begin(), entries_.end(), [&](const Entry& e) { return e.name == name; });
    return it == entries_.end() ? nullptr : &it->value;
  }

  // Throws UnknownName (listing the known names) when absent.
  const Value& get(const std::string& name) const {
    if (const Value* v = find(name)) return *v;
    throw UnknownName(what_, name, names());
  }

  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& e : entries_) out.push_back(e.name);
    return out;
  }
  const std::vector<Entry>& entries() const { return entries_; }

 private:
  std::string what_;
  std::vector<Entry> entries_;  // registration order is the listing order
};

}  // namespace twinbed
