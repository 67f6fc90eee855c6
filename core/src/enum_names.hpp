// Internal to core/src: an enum's names, kept in one table of (value, name) pairs per enum, and the
// three lookups every such enum offers (its name, all names in table order, parsing a name).
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "twinbed/core/error.hpp"

namespace twinbed::enum_names {

template <class E, std::size_t N>
using Table = std::pair<E, const char*>[N];

// `value`'s name; InvalidArgument(`not_one`) for a value missing from the table.
template <class E, std::size_t N>
std::string name_of(const Table<E, N>& table, E value, const char* not_one) {
  for (const auto& [v, name] : table)
    if (v == value) return name;
  throw InvalidArgument(not_one);
}

template <class E, std::size_t N>
std::vector<std::string> names(const Table<E, N>& table) {
  std::vector<std::string> out;
  for (const auto& entry : table) out.emplace_back(entry.second);
  return out;
}

// The value named `name`; UnknownName(`kind`, name, every name) otherwise.
template <class E, std::size_t N>
E parse(const Table<E, N>& table, const std::string& name, const char* kind) {
  for (const auto& [v, text] : table)
    if (name == text) return v;
  throw UnknownName(kind, name, names(table));
}

}  // namespace twinbed::enum_names
