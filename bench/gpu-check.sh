#!/bin/sh
# gpu-check.sh: the CUDA build's checks and benchmarks on a machine with an NVIDIA GPU, in
# one go, for a session that has one for a few minutes. In a clone of this checkout it
# configures --enable-cuda (autoreconf first), builds, runs tests/cuda.sh (every backend
# operation on cuda against the CPU, whole runs on both, a GPU checkpoint resumed on the
# CPU), then bench_dense and bench_kfac on cuda and on cpu, keeping every log in OUTDIR.
#
#   bench/gpu-check.sh [OUTDIR]     default: $OUT, else bench/out/gpu-check
#
# Exit status: that of tests/cuda.sh (77: it skipped, no GPU was visible).
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-${OUT:-$top/bench/out/gpu-check}}
mkdir -p "$out"
tree=$(mktemp -d "${TMPDIR:-/tmp}/kfac-gpu-XXXXXX")
git clone -q "$top" "$tree/src" || exit 1
cd "$tree/src" || exit 1
{ autoreconf -fi && ./configure --enable-cuda && make -j"$(nproc)" && make bench; } \
    >"$out/build.log" 2>&1 || { echo "gpu-check: the build failed (see $out/build.log)"; tail -20 "$out/build.log"; exit 1; }
nvidia-smi >"$out/nvidia-smi.txt" 2>&1
make check TESTS="tests/check_backend tests/cuda.sh" >"$out/check.log" 2>&1
cp tests/cuda.log "$out/cuda.log" 2>/dev/null
status=$(sed -n 's/^:test-result: //p' tests/cuda.trs 2>/dev/null)
echo "gpu-check: tests/cuda.sh: ${status:-no result}"
grep -E '^(ok|not ok|SKIP)' "$out/cuda.log" 2>/dev/null
for dev in cuda cpu; do
    bench/bench_dense --device $dev 10000 5 >"$out/bench_dense-$dev.txt" 2>&1
    bench/bench_kfac --device $dev 0.25 1 1000 10000 >"$out/bench_kfac-$dev.txt" 2>&1
    cat "$out/bench_dense-$dev.txt" "$out/bench_kfac-$dev.txt"
done
rm -rf "$tree"
case $status in PASS) exit 0 ;; SKIP) exit 77 ;; *) exit 1 ;; esac
