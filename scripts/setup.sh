#!/usr/bin/env bash
# Installs qatd's build dependencies (Debian 12) and builds the project into ./build.
#   scripts/setup.sh            # install (when root or via sudo) + configure + build
#   QATD_SKIP_APT=1 scripts/setup.sh   # build only
# Environment: BUILD_DIR (default build), BUILD_TYPE (default Release), JOBS.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
BUILD_TYPE=${BUILD_TYPE:-Release}
JOBS=${JOBS:-$(nproc)}

if [[ "${QATD_SKIP_APT:-0}" != 1 ]]; then
  mapfile -t pkgs < <(grep -v '^\s*#' "$ROOT/scripts/deps.txt" | grep -v '^\s*$')
  missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    SUDO=""
    [[ $(id -u) -ne 0 ]] && SUDO=sudo
    echo "== installing ${#missing[@]} Debian packages: ${missing[*]}"
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
  else
    echo "== all Debian packages present"
  fi
fi

export CCACHE_DIR=${CCACHE_DIR:-$ROOT/.cache/ccache}
mkdir -p "$CCACHE_DIR"
ccache --max-size=5G >/dev/null 2>&1 || true

if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
  cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="$BUILD_TYPE" "$@"
fi
echo "== building in $BUILD_DIR with $JOBS jobs"
cmake --build "$BUILD_DIR" -j"$JOBS"
echo "== build done: binaries in $BUILD_DIR (qat-model: $BUILD_DIR/tools/qat-model)"
