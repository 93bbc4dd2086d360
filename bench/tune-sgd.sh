#!/bin/sh
# tune-sgd.sh: a grid search for the SGD baseline's learning rate and batch size at a
# fixed wall-clock budget: each (learning rate, batch size) pair trains CONFIG for SECONDS
# of training time, and the training error at the end (and of the Polyak average) is
# printed, best last. The baseline in configs/mnist-autoencoder-sgd.ini was chosen so.
#
#   bench/tune-sgd.sh [CONFIG [SECONDS [OUTDIR]]]
#       defaults: configs/mnist-autoencoder-sgd.ini, 150 s, bench/out/tune
# The grid is RATES x BATCHES from the environment (defaults below).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cfg=${1:-$top/configs/mnist-autoencoder-sgd.ini}
budget=${2:-150}
out=${3:-$top/bench/out/tune}
rates=${RATES:-0.001 0.003 0.01 0.03 0.05 0.1}
batches=${BATCHES:-125 250 500 1000}
mkdir -p "$out"
for lr in $rates; do
    for m in $batches; do
        log="$out/sgd-lr$lr-m$m.tsv"
        if ! "$top/kfac-train" -q -f --log "$log" --set optimizer.learning_rate="$lr" \
            --set train.batch_size="$m" --set train.max_seconds="$budget" \
            --set train.iterations=100000000 --set log.eval_every=200 "$cfg" 2>"$out/err"; then
            echo "lr $lr batch $m: failed: $(cat "$out/err")"
            continue
        fi
        awk -F'\t' -v lr="$lr" -v m="$m" '
            NR == 1 { for (i = 1; i <= NF; i++) h[$i] = i; next }
            $h["train_recon"] != "nan" { last = $1 "\t" $h["train_recon"] "\t" (("train_recon_avg" in h) ? $h["train_recon_avg"] : "nan") }
            END { split(last, v, "\t"); printf "%s\t%s\t%s\t%s\t%s\n", v[2], lr, m, v[1], v[3] }' "$log"
    done
done | sort -g -r | awk -F'\t' 'BEGIN { printf "%-8s %-6s %-10s %-12s %s\n", "lr", "batch", "iterations", "train_error", "averaged" }
                              { printf "%-8s %-6s %-10s %-12.5g %.5g\n", $2, $3, $4, $1, $5 }'
