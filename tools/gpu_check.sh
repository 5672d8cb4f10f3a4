#!/usr/bin/env bash
# The GPU session's one script (issue 16; a GPU machine is lent only now and then): builds
# gdfast with its CUDA kernels for the card it finds (or takes the package
# tools/gpu_prebuild.sh built, if the call carries .gpu-prebuilt: no build minutes then), runs
# the CUDA tests, the CUDA benchmark, the host's and the kernels' times per step, what the
# reductions cost and, time allowing, the whole suite against that build. Logs go to $OUT
# (what the device tool brings back) or ./gpu-out. Needs torch with CUDA, CuPy, pybind11,
# scikit-build-core, cmake, ninja and nvcc already installed: it fetches nothing.
set -uo pipefail
export PYTHONUNBUFFERED=1
out="${OUT:-$PWD/gpu-out}"
mkdir -p "$out"
start=$SECONDS
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  echo "cpus: $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
  python3 -c 'import sys, torch, numpy; print("python", sys.version.split()[0], "torch", torch.__version__, "numpy", numpy.__version__)'
  python3 -c 'import cupy; print("cupy", cupy.__version__)'
  nvcc --version | tail -1
} 2>&1 | tee "$out/env.txt"

if [ -d .gpu-prebuilt/gdfast ]; then
  # Built on the developer's machine by tools/gpu_prebuild.sh and carried with the call.
  export PYTHONPATH="$PWD/.gpu-prebuilt"
  arch=prebuilt
else
  arch="$(python3 -c 'import torch; print("%d%d-real" % torch.cuda.get_device_capability())')"
  CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" python3 -m pip install --no-build-isolation --no-deps \
    -Ccmake.define.GDFAST_ENABLE_CUDA=ON -Ccmake.define.CMAKE_CUDA_ARCHITECTURES="$arch" \
    -Cbuild-dir=/tmp/gdfast-build . >"$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
fi
echo "build for $arch: $((SECONDS - start)) s"
# -P: the installed gdfast, not the source folder (which has no compiled module).
python3 -P -c 'import gdfast; print("cuda available:", gdfast.cuda.is_available(), gdfast.isa_info())'

phase=$SECONDS
timeout "${GPU_TEST_TIMEOUT:-240}" python3 -P -m pytest -p no:cacheprovider -p no:benchmark -q -n 8 --tb=short \
  tests/test_cuda.py 2>&1 | tee "$out/test_cuda.log" | tail -60
echo "tests/test_cuda.py: $((SECONDS - phase)) s"

phase=$SECONDS
timeout "${GPU_BENCH_TIMEOUT:-180}" python3 -P -m pytest -p no:cacheprovider -q bench/bench_cuda.py \
  --benchmark-only --benchmark-json "$out/cuda-bench.json" >"$out/bench.log" 2>&1
tail -5 "$out/bench.log"
python3 -P bench/report.py "$out/cuda-bench.json" | tee "$out/cuda-bench.txt"
echo "bench/bench_cuda.py: $((SECONDS - phase)) s"
timeout 60 python3 -P tools/gpu_host_time.py 2>&1 | tee "$out/host_time.txt" | head -40
timeout 120 python3 -P tools/gpu_kernel_time.py 2>&1 | tee "$out/kernel_time.txt"
timeout 100 python3 -P tools/gpu_reduce_time.py 2>&1 | tee "$out/reduce_time.txt"

if [ -n "${GPU_FULL_SUITE:-}" ]; then
  phase=$SECONDS
  timeout "$GPU_FULL_SUITE" python3 -P -m pytest -p no:cacheprovider -p no:benchmark -q -n "$(nproc)" \
    --tb=line tests --ignore=tests/test_cuda.py 2>&1 | tee "$out/suite.log" | tail -25
  echo "the suite against the CUDA build: $((SECONDS - phase)) s"
fi
echo "total: $((SECONDS - start)) s"
