#!/usr/bin/env bash
# Builds gdfast with its CUDA kernels for the lent GPU machine's Python (3.12, Ubuntu 24.04)
# on this machine, so the GPU's few minutes go to running, not compiling: a CPython 3.12 from
# Ubuntu's archive runs here through its own loader (only CMake's queries and Cython need it),
# and the package lands in .gpu-prebuilt/gdfast, which `tools/gpu_check.sh` uses when the
# device call carries it (carry: [".gpu-prebuilt"]). Needs nvcc, cmake, ninja, a venv with
# pybind11 (VENV, default /work/venv) and archive.ubuntu.com.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${PREBUILD_DIR:-/tmp/gdfast-py312}"
venv="${VENV:-/work/venv}"
arch="${CUDA_ARCH:-90-real}"  # H100 and H200
root="$work/root"
python="$work/python3.12"

if [ ! -x "$python" ]; then
  mkdir -p "$work/lists/partial" "$work/debs" "$root"
  echo "deb [trusted=yes] http://archive.ubuntu.com/ubuntu noble main
deb [trusted=yes] http://archive.ubuntu.com/ubuntu noble-updates main" >"$work/sources.list"
  apt_options=(-oDir::Etc::SourceList="$work/sources.list" -oDir::Etc::SourceParts=/dev/null
               -oDir::State::Lists="$work/lists" -oAPT::Architecture=amd64)
  apt-get "${apt_options[@]}" update -qq 2>/dev/null
  (cd "$work/debs" && apt-get "${apt_options[@]}" download libc6 libexpat1 zlib1g \
     python3.12-minimal libpython3.12-minimal libpython3.12-stdlib libpython3.12-dev)
  for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$root"; done
  # Ubuntu's pyconfig.h only includes the multiarch one; CMake finds the plain include dir.
  cp "$root/usr/include/x86_64-linux-gnu/python3.12/pyconfig.h" "$root/usr/include/python3.12/"
  lib="$root/usr/lib/x86_64-linux-gnu"
  printf '#!/bin/sh\nexec %s --library-path %s %s "$@"\n' \
    "$lib/ld-linux-x86-64.so.2" "$lib" "$root/usr/bin/python3.12" >"$python"
  chmod +x "$python"
  "$venv/bin/pip" download -q --only-binary=:all: --no-deps --python-version 3.12 \
    --platform any -d "$work/wheels" cython
  (cd "$work" && mkdir -p site && cd site && unzip -q -o ../wheels/cython-*.whl)
fi

export PYTHONPATH="$work/site" PATH="$venv/bin:$PATH"
cmake -S "$repo" -B "$work/build" -G Ninja -DPython_EXECUTABLE="$python" \
  -Dpybind11_DIR="$("$venv/bin/python" -c 'import pybind11; print(pybind11.get_cmake_dir())')" \
  -DGDFAST_ENABLE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" -DSKBUILD_PROJECT_VERSION=0.0.0 \
  -DCMAKE_INSTALL_PREFIX="$work/install" >/dev/null
cmake --build "$work/build" -j"$(nproc)"
cmake --install "$work/build" >/dev/null
rm -rf "$repo/.gpu-prebuilt"
mkdir -p "$repo/.gpu-prebuilt"
cp -r "$repo/gdfast" "$repo/.gpu-prebuilt/"
find "$repo/.gpu-prebuilt" -name __pycache__ -prune -exec rm -rf {} +
cp "$work"/install/gdfast/*.so "$repo/.gpu-prebuilt/gdfast/"
du -sh "$repo/.gpu-prebuilt"
