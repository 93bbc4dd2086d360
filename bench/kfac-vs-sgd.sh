#!/bin/sh
# kfac-vs-sgd.sh: K-FAC against the SGD baseline on the MNIST deep autoencoder for the
# same wall-clock budget: runs configs/mnist-autoencoder.ini and
# configs/mnist-autoencoder-sgd.ini for SECONDS of training each (evaluations excluded),
# prints the training error against time for both, K-FAC's error at iterations 500 and
# 1000 (when reached), and the time each optimiser took to reach the SGD run's final
# error; plots both logs against time into OUTDIR/kfac-vs-sgd.png (needs gnuplot).
#
#   bench/kfac-vs-sgd.sh [-r] [SECONDS [OUTDIR]]      defaults: 600 s each, bench/out
#
# -r reports on the logs already in OUTDIR (kfac.tsv, sgd.tsv) without training.
#
# Extra kfac-train options (e.g. --set data.train=...) can be passed in KFAC_ARGS.
# Run it on an otherwise idle machine: the two runs are compared by their clocks.
set -eu
name=kfac-vs-sgd
. "$(dirname "$0")/lib.sh"
shift $shift_r
budget=${1:-600}
out=${2:-$top/bench/out}
mkdir -p "$out"
[ "$report_only" = 1 ] || for opt in kfac sgd; do
    case $opt in
    kfac) cfg=$top/configs/mnist-autoencoder.ini every=25 ;;
    sgd) cfg=$top/configs/mnist-autoencoder-sgd.ini every=100 ;;
    esac
    echo "kfac-vs-sgd: $opt for $budget s ($(basename "$cfg"))" >&2
    # shellcheck disable=SC2086 # KFAC_ARGS is a list of options
    "$kfac" -q -f --log "$out/$opt.tsv" --set train.max_seconds="$budget" \
        --set train.iterations=100000000 --set log.eval_every=$every ${KFAC_ARGS:-} "$cfg"
done

errors "$out/kfac.tsv" >"$out/kfac.err"
errors "$out/sgd.tsv" >"$out/sgd.err"
target=$(tail -n 1 "$out/sgd.err" | cut -f3)

echo "# training reconstruction error against training time: the last evaluation at or before"
echo "# each time, $budget s of training each"
printf '%-8s | %-10s %-12s | %-10s %-12s\n' seconds kfac_iter kfac_error sgd_iter sgd_error
awk -F'\t' -v budget="$budget" '
    FNR == 1 { run++ }
    { it[run, FNR] = $1; t[run, FNR] = $2; e[run, FNR] = $3; n[run] = FNR }
    END {
        for (step = 1; step <= 20; step++) {
            at = budget * step / 20
            line = sprintf("%-8.0f", at)
            for (r = 1; r <= 2; r++) {
                k = 0
                for (i = 1; i <= n[r]; i++) if (t[r, i] <= at) k = i
                line = line (k ? sprintf(" | %-10s %-12.5g", it[r, k], e[r, k]) : sprintf(" | %-10s %-12s", "-", "-"))
            }
            print line
        }
    }' "$out/kfac.err" "$out/sgd.err"
echo
for k in 500 1000; do
    awk -F'\t' -v k=$k '$1 == k { printf "K-FAC error at iteration %d: %.4g (%.0f s)\n", k, $3, $2; found = 1 }
                       END { if (!found) printf "K-FAC did not reach iteration %d in the budget\n", k }' "$out/kfac.err"
done
for opt in kfac sgd; do
    awk -F'\t' -v t="$target" -v o=$opt '$3 <= t { printf "%s reaches the SGD final error %.4g at iteration %d, %.1f s\n", o, t, $1, $2; found = 1; exit }
                                         END { if (!found) printf "%s never reaches %.4g\n", o, t }' "$out/$opt.err"
done
"$top/tools/kfac-plot" -x seconds -t "MNIST autoencoder: K-FAC against SGD, $budget s each" \
    -o "$out/kfac-vs-sgd.png" "$out/kfac.tsv" "$out/sgd.tsv" || echo "kfac-vs-sgd: no plot (see above)" >&2
