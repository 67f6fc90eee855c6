// The git revision this build was configured at ("<12 hex digits>", "-dirty" appended when the tree had
// local changes, "unknown" outside a git checkout): the provenance results and profiles carry. Defined in
// a source CMake generates (top-level CMakeLists.txt), so that a new revision recompiles one file.
#pragma once

namespace twinbed {

const char* built_revision();

}  // namespace twinbed
