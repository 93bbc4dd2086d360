#!/bin/sh
# tridiag-vs-kfac.sh: block-tridiagonal against block-diagonal K-FAC on the MNIST deep
# autoencoder: trains configs/mnist-autoencoder.ini for ITERATIONS iterations with each
# curvature (optimizer.curvature = block-diagonal, kfac-tridiag) from the same seed, prints
# the training error of both every 25 iterations with their training times, the ratio of
# their seconds per iteration over the whole run, and plots the training error against
# iterations and against seconds into OUTDIR/tridiag-vs-kfac-iter.png and
# OUTDIR/tridiag-vs-kfac-seconds.png (needs gnuplot).
#
#   bench/tridiag-vs-kfac.sh [-r] [ITERATIONS [OUTDIR]]      defaults: 300, bench/out
#
# -r reports on the logs already in OUTDIR (kfac-diag.tsv, kfac-tridiag.tsv).
# Extra kfac-train options (e.g. --set data.train=...) can be passed in KFAC_ARGS.
# Run it on an otherwise idle machine: the two runs are compared by their clocks.
set -eu
name=tridiag-vs-kfac
. "$(dirname "$0")/lib.sh"
shift $shift_r
iterations=${1:-300}
out=${2:-$top/bench/out}
mkdir -p "$out"
[ "$report_only" = 1 ] || for curv in block-diagonal kfac-tridiag; do
    case $curv in
    block-diagonal) log=$out/kfac-diag.tsv ;;
    kfac-tridiag) log=$out/kfac-tridiag.tsv ;;
    esac
    echo "tridiag-vs-kfac: $curv for $iterations iterations" >&2
    # shellcheck disable=SC2086 # KFAC_ARGS is a list of options
    "$kfac" -q -f --log "$log" --set optimizer.curvature=$curv \
        --set train.iterations="$iterations" --set log.eval_every=25 ${KFAC_ARGS:-} \
        "$top/configs/mnist-autoencoder.ini"
done

errors "$out/kfac-diag.tsv" >"$out/kfac-diag.err"
errors "$out/kfac-tridiag.tsv" >"$out/kfac-tridiag.err"
echo "# MNIST autoencoder, training reconstruction error (summed over pixels, mean over cases)"
printf '%-6s | %-10s %-9s | %-10s %-9s\n' iter diag_error diag_s tri_error tri_s
join -t "$(printf '\t')" "$out/kfac-diag.err" "$out/kfac-tridiag.err" |
    awk -F'\t' '{ printf "%-6s | %-10.5g %-9.1f | %-10.5g %-9.1f\n", $1, $3, $2, $5, $4 }'
awk -F'\t' 'FNR == 1 { for (i = 1; i <= NF; i++) if ($i == "seconds") s = i; run++; next }
            { t[run] = $s; n[run] = $1 }
            END { printf "seconds per iteration over %d iterations: block-diagonal %.3f, tridiagonal %.3f, ratio %.2f\n",
                         n[1], t[1] / n[1], t[2] / n[2], (t[2] / n[2]) / (t[1] / n[1]) }' \
    "$out/kfac-diag.tsv" "$out/kfac-tridiag.tsv"
for x in iter seconds; do
    "$top/tools/kfac-plot" -x $x -t "MNIST autoencoder: block-tridiagonal against block-diagonal K-FAC" \
        -o "$out/tridiag-vs-kfac-$x.png" "$out/kfac-diag.tsv" "$out/kfac-tridiag.tsv" ||
        echo "tridiag-vs-kfac: no plot (see above)" >&2
done
