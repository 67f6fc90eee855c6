#!/usr/bin/env bash
# Installs the Debian packages twinbed builds and runs with, only those that are missing.
# Debian 12 / Ubuntu 22.04+. Needs root or sudo. CUDA and NCCL are optional and not installed here:
# when nvcc is on PATH (or at /usr/local/cuda) the CUDA parts are built too.
#   scripts/install-deps.sh --fuzz   also Clang and its libFuzzer runtime (scripts/fuzz.sh)
set -euo pipefail

packages=(
  build-essential cmake
  util-linux                                             # flock(1): tests/cli/check_results_folder.sh
  libeigen3-dev nlohmann-json3-dev libcli11-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libopenmpi-dev openmpi-bin
  python3 python3-matplotlib
  fortunes                                               # the text `twinbed train` learns (/usr/share/games/fortunes)
  python3-nbconvert python3-nbformat python3-ipykernel   # runs notebooks/*.ipynb headless (the claims notebook test)
)
if [ "${1:-}" = "--fuzz" ]; then
  packages+=(clang libclang-rt-14-dev)   # Debian 12's Clang; libFuzzer is in the runtime package
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
