#!/bin/sh
# tests/fuzz/run.sh: fuzzes the readers of untrusted files with libFuzzer (clang, from
# Debian's clang package) under AddressSanitizer and UndefinedBehaviorSanitizer.
#
#   tests/fuzz/run.sh [SECONDS [TARGET...]]     default: 60 s each, all targets
#
# Targets: idx npy csv mat ini checkpoint checkpoint_fields (tests/fuzz/fuzz_TARGET.c). Each
# starts from the seeds in tests/fuzz/corpus/TARGET (kept in git) and grows a working
# corpus in tests/fuzz/work/TARGET (not kept). An input that crashes a target, leaks or runs out of
# memory is written to tests/fuzz/crashes/TARGET/; once the bug is fixed, commit it there:
# make check replays every file in corpus/ and crashes/ (tests/fuzz.sh). The last lines
# give each target's executions and findings.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
seconds=${1:-60}
[ $# -gt 0 ] && shift
targets=${*:-idx npy csv mat ini checkpoint checkpoint_fields}
command -v clang >/dev/null 2>&1 || { echo "run.sh: clang is not installed (Debian: apt-get install clang)" >&2; exit 2; }
[ -f "$top/config.h" ] || { echo "run.sh: configure the project first (./bootstrap)" >&2; exit 2; }
! grep -q '^#define KFAC_HAVE_CUDA' "$top/config.h" ||
    { echo "run.sh: the tree is configured --enable-cuda; configure it without" >&2; exit 2; }
build=$here/work/build
mkdir -p "$build"
# A tree configured --with-mpi builds src/comm.c against MPI: its flags as configure found them.
mpi_cflags=$(sed -n 's/^MPI_CFLAGS = //p' "$top/Makefile")
mpi_libs=$(sed -n 's/^MPI_LIBS = //p' "$top/Makefile")
libs="$(pkg-config --libs openblas lapacke zlib inih libpng matio) $mpi_libs -lm"
cflags="-std=c11 -D_GNU_SOURCE -g -O1 -I$top -I$top/include $(pkg-config --cflags openblas lapacke zlib inih libpng matio) $mpi_cflags"
san="-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
# The library once, as objects for the fuzzer: everything but main.c, and but the CUDA
# backend, which only an --enable-cuda tree builds.
for src in "$top"/src/*.c; do
    case $src in */main.c | */backend_cuda.c) continue ;; esac
    obj=$build/$(basename "$src" .c).o
    [ "$obj" -nt "$src" ] && [ "$obj" -nt "$top/config.h" ] || clang $cflags -fsanitize=fuzzer-no-link,address,undefined -c "$src" -o "$obj"
done
summary=
for t in $targets; do
    [ -f "$here/fuzz_$t.c" ] || { echo "run.sh: no target '$t'" >&2; exit 2; }
    clang $cflags $san "$here/fuzz_$t.c" "$build"/*.o $libs -o "$build/fuzz_$t"
    mkdir -p "$here/work/$t" "$here/crashes/$t"
    log=$here/work/$t.log
    echo "run.sh: fuzzing $t for $seconds s" >&2
    # libmatio allocates what a variable's header claims before it reads (1.8 GiB seen from
    # a file of 224 bytes, with 11 MB resident in kfac-train's reader) and never touches what
    # the file lacks: a finding only once it is used, which the RSS limit catches.
    malloc_mb=1024
    [ "$t" != mat ] || malloc_mb=4096
    status=0
    "$build/fuzz_$t" -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb="$malloc_mb" \
        -artifact_prefix="$here/crashes/$t/" "$here/work/$t" "$here/corpus/$t" >"$log" 2>&1 || status=$?
    execs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
    [ -n "$execs" ] || execs=$(grep -o '#[0-9]*' "$log" | tail -n 1 | tr -d '#')
    found=$(find "$here/crashes/$t" -type f -newer "$build/fuzz_$t" | wc -l)
    summary="$summary$t: ${execs:-0} executions in $seconds s, $found new finding(s), exit $status
"
done
printf '%s' "$summary"
