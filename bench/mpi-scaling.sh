#!/bin/sh
# mpi-scaling.sh: strong scaling of data-parallel K-FAC (./configure --with-mpi) on this
# machine: the MNIST autoencoder (configs/mnist-autoencoder.ini, 784-1000-500-250-30, fixed
# batches) at batches of 1000 and 10,000 cases, on one process and on 2 ranks, one
# OpenBLAS thread each; the 2 ranks both ways of train.preconditioning (by-layer: each
# rank its layers' inverses, the preconditioned blocks gathered; every-rank: each applies
# every layer's). Prints, per run, the seconds per iteration of the steady iterations
# (from iteration 4, after the first three decompositions; with batch 1000 the span
# includes the decomposition of iteration 20, one in 20 as in a long run), the speed-up
# over one process, and from kfac-train's summary the share of the iteration spent in
# collectives (waits included) and the bytes each rank sends: per iteration for the
# gradient (with by-layer, the gathered preconditioned blocks too) and the statistics,
# per decomposition (iterations 1-3 and every 20th) for the eigendecompositions.
#
#   bench/mpi-scaling.sh [-r] [ITERATIONS_1000 [ITERATIONS_10000 [OUTDIR]]]
#       defaults: 24, 8, bench/out/mpi-scaling
#
# Needs data/mnist (sh data/fetch-mnist.sh) and mpirun. Run it on an otherwise idle
# machine: the two ranks take both cores.
set -eu
name=mpi-scaling
. "$(dirname "$0")/lib.sh"
shift $shift_r
it1=${1:-24}
it10=${2:-8}
out=${3:-$top/bench/out/mpi-scaling}
"$kfac" --version | grep -q '^mpi:' || { echo "$name: kfac-train was built without MPI (./configure --with-mpi)" >&2; exit 2; }
mkdir -p "$out"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
if [ "$report_only" = 0 ]; then
    for batch in 1000 10000; do
        iters=$it1
        [ "$batch" -eq 10000 ] && iters=$it10
        for run in 1 2 2e; do
            np=${run%e} how=by-layer
            [ "$run" = 2e ] && how=every-rank
            set -- "$kfac" -f --log "$out/b$batch-n$run.tsv" --set train.threads=1 \
                --set train.preconditioning=$how \
                --set train.batch_schedule=fixed --set train.batch_size=$batch \
                --set train.iterations=$iters --set log.eval_every=0 --set train.polyak_start=0 \
                --set train.checkpoint_every=0 "$top/configs/mnist-autoencoder.ini"
            if [ "$np" -eq 1 ]; then "$@"; else mpirun -np "$np" "$@"; fi >"$out/b$batch-n$run.out" 2>&1 ||
                { echo "$name: the run failed: $out/b$batch-n$run.out" >&2; exit 1; }
        done
    done
fi

printf 'batch\tranks\tpreconditioning\ts/iter\tspeed-up\tin collectives\tgradient MB/iter\tstatistics MB/iter\tinverses MB/decomposition\n'
for batch in 1000 10000; do
    one=
    for run in 1 2 2e; do
        np=${run%e} how=by-layer
        [ "$run" = 2e ] && how=every-rank
        [ "$np" = 1 ] && how=-
        log=$out/b$batch-n$run.tsv
        steady=$(awk -F'\t' 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "seconds") s = i; next }
                             $1 == 3 { t3 = $s } { t = $s; k = $1 } END { printf "%.4f", (t - t3) / (k - 3) }' "$log")
        [ -z "$one" ] && one=$steady
        line=$(grep 'ranks:' "$out/b$batch-n$run.out" || true)
        share=$(echo "$line" | sed -n 's/.* \([0-9.]*%\) of it.*/\1/p')
        mb() { echo "$line" | sed -n "s/.*$1 \([0-9.e+-]*\) MB.*/\1/p"; }
        iters=$(($(wc -l <"$log") - 1))
        inv=$(mb inverses)
        per=$(awk -v v="${inv:-0}" -v n="$iters" 'BEGIN { d = 0; for (k = 1; k <= n; k++) d += k <= 3 || k % 20 == 0
                                                     printf "%.4g", v * n / d }')
        [ -z "$inv" ] && per=
        printf '%s\t%s\t%s\t%s\t%.2f\t%s\t%s\t%s\t%s\n' "$batch" "$np" "$how" "$steady" \
            "$(awk -v a="$one" -v b="$steady" 'BEGIN { print a / b }')" "${share:--}" \
            "$(mb gradient)" "$(mb statistics)" "$per"
    done
done
