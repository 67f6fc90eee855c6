#!/usr/bin/env bash
# scripts/gpu-deps.sh: gather the build dependencies a GPU machine without package access lacks into one
# folder that travels with the working tree (README, "Building on a GPU machine without package access",
# way (b)): the files of this machine's installed nlohmann-json3-dev, libeigen3-dev, libcli11-dev and
# libgtest-dev packages, under .gpu-deps/usr (about 12 MB). scripts/gpu-check.sh configures with
# CMAKE_PREFIX_PATH=.gpu-deps/usr. The folder is ignored through .git/info/exclude, never committed.
# Usage: scripts/gpu-deps.sh            (Debian/Ubuntu with those packages installed; no network needed)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST=${DEPS:-$ROOT/.gpu-deps}
PACKAGES=(nlohmann-json3-dev libeigen3-dev libcli11-dev libgtest-dev)

rm -rf "$DEST"
mkdir -p "$DEST"
for p in "${PACKAGES[@]}"; do
  if ! dpkg -s "$p" >/dev/null 2>&1; then
    echo "gpu-deps: package $p is not installed here (apt-get install $p, or see README way (a))" >&2
    exit 1
  fi
  # Regular files and symbolic links, with their paths (cmake package files find their prefix from where
  # they sit, so the tree keeps its shape under $DEST).
  dpkg -L "$p" | while read -r f; do
    if [ -f "$f" ] || [ -L "$f" ]; then
      mkdir -p "$DEST$(dirname "$f")"
      cp -a "$f" "$DEST$f"
    fi
  done
done
if [ "$DEST" = "$ROOT/.gpu-deps" ] && ! grep -qx '/.gpu-deps/' "$ROOT/.git/info/exclude" 2>/dev/null; then
  echo '/.gpu-deps/' >>"$ROOT/.git/info/exclude"
fi
echo "gpu-deps: $(du -sh "$DEST" | cut -f1) in $DEST (${PACKAGES[*]})"
