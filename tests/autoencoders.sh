#!/bin/sh
# tests/autoencoders.sh: the deep-autoencoder benchmark as a user meets it: kfac-datagen
# (same seed, same bytes; a different seed, different bytes; no silent overwrite; usage
# errors), and bench/autoencoders.sh end to end on tiny data sets and a one-second
# budget per run: every problem and variant trains, the summary has a row for each, the
# plots are drawn when gnuplot is installed, missing data is named with its script, and the
# time-to-error table (-t) agrees with the logs.
. "$top_srcdir/tests/lib.sh"
GEN="$top_builddir/tools/kfac-datagen"
D=$WORK/data

expect_status 0 "kfac-datagen writes CURVES" -- "$GEN" curves --seed 7 --train 300 --test 60 "$D/curves"
expect_grep "$WORK/out" "wrote 300 28 x 28 images to .*curves-train-images-idx3-ubyte.gz" "it says what it wrote"
expect_status 0 "the same seed again (forced)" -- "$GEN" curves -f -s 7 -n 300 -t 60 "$WORK/again"
if cmp -s "$D/curves/curves-train-images-idx3-ubyte.gz" "$WORK/again/curves-train-images-idx3-ubyte.gz" &&
   cmp -s "$D/curves/curves-test-images-idx3-ubyte.gz" "$WORK/again/curves-test-images-idx3-ubyte.gz"; then
    ok "the same seed gives the same bytes"
else
    not_ok "the same seed gives the same bytes"
fi
"$GEN" curves -f -s 8 -n 300 -t 60 "$WORK/other" >/dev/null
if cmp -s "$D/curves/curves-train-images-idx3-ubyte.gz" "$WORK/other/curves-train-images-idx3-ubyte.gz"; then
    not_ok "another seed gives other images"
else
    ok "another seed gives other images"
fi
expect_status 2 "kfac-datagen refuses to replace its output unprompted" -- "$GEN" curves -s 7 -n 300 -t 60 "$D/curves"
expect_grep "$WORK/err" "exists; give --force" "and says how to replace it"
expect_status 2 "an unknown set is refused" -- "$GEN" squares "$WORK/x"
expect_grep "$WORK/err" "unknown set 'squares'" "and named"
expect_status 2 "a bad count is refused" -- "$GEN" curves --train 0 "$WORK/x"
expect_grep "$WORK/err" "--train must be an integer" "and named"

"$MKFIXTURE" blobs "$WORK/blobs.npy" 10 3
expect_status 0 "kfac-datagen writes the FACES stand-in" -- "$GEN" faces -s 2 -n 200 -t 40 "$WORK/blobs.npy" "$D/faces"
expect_grep "$WORK/out" "wrote 40 25 x 25 images to .*faces-test-images-idx3-ubyte.gz" "both splits"
expect_status 2 "faces from a non-image file are refused" -- "$GEN" faces "$D/curves/curves-test-images-idx3-ubyte.gz" "$WORK/x"
expect_grep "$WORK/err" "not an NPY file" "with the reader's message"

# MNIST's network reads 784 pixels; CURVES images stand in for the digits here.
mkdir -p "$D/mnist"
cp "$D/curves/curves-train-images-idx3-ubyte.gz" "$D/mnist/mnist-10k-images-idx3-ubyte.gz"

B="$top_srcdir/bench/autoencoders.sh"
expect_status 2 "the benchmark names missing data and its script" -- sh "$B" -d "$WORK/none" -p curves 1 "$WORK/bench"
expect_grep "$WORK/err" "curves-train-images-idx3-ubyte.gz is missing; data/make-curves.sh makes it" "before training"
expect_status 2 "an unknown variant is refused" -- sh "$B" -d "$D" -v "sgd adam" 1 "$WORK/bench"
expect_status 2 "a level that is not a number is refused" -- sh "$B" -d "$D" -t "25 six" -u 1 1 "$WORK/bench"
expect_grep "$WORK/err" "'six' is not an error level" "and named"
expect_status 2 "so is a unit that is not positive" -- sh "$B" -d "$D" -t 25 -u 0 1 "$WORK/bench"
expect_status 0 "the benchmark runs every problem and variant" -- sh "$B" -d "$D" -v "sgd kfac paper tridiag kfoc" 1 "$WORK/bench"
rows=$(awk -F'\t' 'NR > 1 && $3 >= 1 && $5 + 0 > 0' "$WORK/bench/summary.tsv" | wc -l)
if [ "$rows" -eq 15 ]; then ok "15 runs in the summary, each with iterations and an error"; else
    not_ok "15 runs in the summary (found $rows)"; sed 's/^/#   /' "$WORK/bench/summary.tsv"; fi
# Column $2 of log $1's first iteration.
col1() {
    awk -F'\t' -v c="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == c) r = i; next }
                          NR == 2 { print $r; exit }' "$1"
}
# The first iteration's rho: measured in the warm-up, not in the paper's schedule (k = 5);
# CURVES starts as the paper does in either variant.
if [ "$(col1 "$WORK/bench/mnist-paper.tsv" rho)" = nan ] &&
   [ "$(col1 "$WORK/bench/mnist-kfac.tsv" rho)" != nan ] &&
   [ "$(col1 "$WORK/bench/curves-kfac.tsv" rho)" = nan ]; then
    ok "MNIST's kfac variant warms λ up from iteration 1; its paper variant and CURVES do not"
else
    not_ok "MNIST's kfac variant warms λ up from iteration 1; its paper variant and CURVES do not"
fi
# The paper variant runs KFAC3's constants (optimizer.preset = kfac3): its first α (the
# model on the whole batch, not the configuration's eighth of it) is that of a run given
# the two keys in which the configuration differs from them by hand.
for fraction in 1 0.125; do
    "$KFAC" -q -f --log "$WORK/paper-$fraction.tsv" --set train.iterations=1 \
        --set log.eval_every=25 \
        --set data.train="$D/curves/curves-train-images-idx3-ubyte.gz" \
        --set data.test="$D/curves/curves-test-images-idx3-ubyte.gz" --set optimizer.start=paper \
        --set optimizer.model_fraction=$fraction "$top_srcdir/configs/curves-autoencoder.ini"
done
a_bench=$(col1 "$WORK/bench/curves-paper.tsv" alpha)
if [ "$a_bench" = "$(col1 "$WORK/paper-1.tsv" alpha)" ] &&
   [ "$a_bench" != "$(col1 "$WORK/paper-0.125.tsv" alpha)" ]; then
    ok "the paper variant takes the model on the whole batch"
else
    not_ok "the paper variant takes the model on the whole batch (alpha $a_bench)"
fi
for p in mnist curves faces; do
    for v in sgd kfac paper tridiag kfoc; do
        [ -s "$WORK/bench/$p-$v.tsv" ] || { not_ok "$p-$v.tsv written"; continue 2; }
    done
    ok "$p: a log per variant"
done
expect_grep "$WORK/out" "seconds_to_sgd_final" "the table is printed"
expect_status 0 "the quickstart comparison runs" -- sh "$B" -d "$D" -p quickstart -v "sgd kfac" 1 "$WORK/qs"
[ "$(awk -F'\t' 'NR > 1 && $1 == "quickstart" && $3 >= 1' "$WORK/qs/summary.tsv" | wc -l)" -eq 2 ] &&
    ok "with a row for SGD and one for K-FAC" || not_ok "with a row for SGD and one for K-FAC"
if command -v gnuplot >/dev/null 2>&1; then
    for f in curves-seconds curves-iterations faces-seconds mnist-iterations; do
        [ -s "$WORK/bench/$f.png" ] && ok "$f.png drawn" || not_ok "$f.png drawn"
    done
fi
expect_status 0 "without its plotter the report is still made" -- env GNUPLOT=no-such-gnuplot \
    sh "$B" -r -p curves -v "sgd kfac" 1 "$WORK/bench"
expect_grep "$WORK/err" "no-such-gnuplot is not installed" "and it says why there are no plots"
expect_status 0 "-r reports on the logs without training" -- sh "$B" -r -p curves -v "sgd kfac" 1 "$WORK/bench"
if [ "$(wc -l <"$WORK/bench/summary.tsv")" -eq 3 ]; then ok "with the selected rows"; else
    not_ok "with the selected rows"; fi
# Time to error, against the logs: a level above every error is reached at the first
# evaluation, one below every error never; units are seconds / the SGD iteration.
expect_status 2 "-t takes plain decimals" -- sh "$B" -r -p curves -v "sgd kfac" -t "1e9" -u 0.5 1 "$WORK/bench"
expect_status 0 "-t reports the time to each error level" -- sh "$B" -r -p curves -v "sgd kfac" -t "1000000 0" -u 0.5 1 "$WORK/bench"
first=$(awk -F'\t' 'NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "seconds") s = i; if ($i == "train_recon") e = i } next }
                     $e != "nan" { printf "%.1f\t%.0f\n", $s, $s / 0.5; exit }' "$WORK/bench/curves-kfac.tsv")
row=$(awk -F'\t' '$2 == "kfac" { print $3 "\t" $4 "\t" $5 "\t" $6 }' "$WORK/bench/time-to-error.tsv")
if [ "$row" = "$(printf '%s\tnever\tnever' "$first")" ]; then ok "at the first evaluation, and never"; else
    not_ok "at the first evaluation, and never (got '$row', want '$first never never')"; fi
expect_grep "$WORK/out" "SGD iterations (batch 1000, MNIST autoencoder: 0.5 s each)" "with its unit"
[ "$(cat "$WORK/bench/sgd-iteration.txt")" = 0.5 ] && ok "the unit is kept for -r" || not_ok "the unit is kept for -r"
finish
