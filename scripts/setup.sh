#!/usr/bin/env bash
# Installs whatever Debian packages are missing, then configures and builds
# dptrain (Release) in build/. Safe to run again: it installs nothing and
# rebuilds nothing that is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(cmake g++ make libopenmpi-dev openmpi-bin libdnnl-dev libboost-dev libprotobuf-dev
          protobuf-compiler libgtest-dev libgmock-dev libbenchmark-dev zlib1g-dev
          dataset-fashion-mnist libcli11-dev libboost-filesystem-dev tmux libsqlite3-dev sqlite3
          libjs-chart.js chromium clang libclang-rt-14-dev libpng-dev
          libturbojpeg0-dev libonnx-dev python3-onnx python3-opencv)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -f build/CMakeCache.txt ]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build build -j "$(nproc)" -- --no-print-directory | grep -vE '^\[ *[0-9]+%\] (Building|Linking)|^Consolidate|^Scanning' || true
test -x build/dist/dptrain && test -x build/launcher/dptrain-launch
