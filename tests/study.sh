#!/bin/sh
# tests/study.sh: kfac-train --fisher-study, tools/kfac-fisher-study and
# kfac-train --fisher-pictures as a user meets them: the table's shape and the relations
# its errors must satisfy, the refusal to overwrite, configuration errors before any
# training, the plot (or, without gnuplot, the table alone and exit status 3), and the
# pictures' sizes and the one case where K-FAC's block is exact.
. "$top_srcdir/tests/lib.sh"
"$MKFIXTURE" csv "$WORK/reg.csv" 300 2
cat >"$WORK/study.ini" <<INI
[data]
train = reg.csv
task = regression
target_columns = y
standardize = true
[model]
layers = 3-8:relu-1:linear
init = he
[optimizer]
learning_rate = 0.02
[train]
iterations = 100
batch_size = 30
[log]
eval_every = 0
[study]
seeds = 3
batch_sizes = 1, 10,full
INI
expect_status 0 "the Fisher study runs" -- "$KFAC" --fisher-study --log "$WORK/fs.tsv" "$WORK/study.ini"
expect_grep "$WORK/err" "Fisher study over 3 seeds, 300 cases" "it prints a summary"
expect_grep "$WORK/err" "^layer 2 (dense 8 -> 1)" "the summary names the layers"
expect_grep "$WORK/err" "^layers 1-2  0\.[0-9]* \[" "the summary gives the coupling block's error"
[ "$(head -n 1 "$WORK/fs.tsv")" = "$(printf 'seed\tbatch_size\tbatches\ttrain_rmse\tdiag_1\tkfac_1\tkfoc_approx_1\tkfoc_running_1\tdiag_2\tkfac_2\tkfoc_approx_2\tkfoc_running_2\ttridiag_1_2\tkfoc_iterations')" ] \
    && ok "the table's columns" || not_ok "the table's columns: $(head -n 1 "$WORK/fs.tsv")"
[ "$(sed 1d "$WORK/fs.tsv" | wc -l)" -eq 9 ] && ok "one row per seed and batch size" \
    || not_ok "one row per seed and batch size ($(sed 1d "$WORK/fs.tsv" | wc -l))"
[ "$(cut -f1-3 "$WORK/fs.tsv" | sed 1d | tr '\t\n' ' ')" = "1 1 300 1 10 30 1 300 1 2 1 300 2 10 30 2 300 1 3 1 300 3 10 30 3 300 1 " ] \
    && ok "seeds, batch sizes ('full' is the 300 cases) and batch counts" \
    || not_ok "seeds, batch sizes and batch counts: $(cut -f1-3 "$WORK/fs.tsv" | sed 1d | tr '\t\n' ' ')"
# In chunks of 7 cases (the training and the study's pass over the 300 cases) the table
# is the same but for float summation order.
expect_status 0 "the study in chunks of 7" -- "$KFAC" --fisher-study --set train.chunk_size=7 \
    --log "$WORK/fs7.tsv" "$WORK/study.ini"
if awk -F'\t' 'NR == FNR { for (i = 1; i <= NF; i++) v[FNR, i] = $i; next }
        FNR > 1 { for (i = 4; i < NF; i++) { d = $i - v[FNR, i]; if (d < 0) d = -d
                  s = v[FNR, i] < 0 ? -v[FNR, i] : v[FNR, i]
                  if (d > 1e-3 * s + 1e-7) { print FNR, i, $i, v[FNR, i]; bad = 1 } } }
        END { exit bad }' "$WORK/fs.tsv" "$WORK/fs7.tsv" >"$WORK/why7"; then
    ok "agrees with the study in one chunk"
else not_ok "agrees with the study in one chunk ($(head -n 3 "$WORK/why7"))"; fi
# Per row: errors in [0, 1.5); on one batch of all cases both K-FOC aggregations are the
# Frobenius-optimal fit, so they agree and are at most K-FAC's; diag and K-FAC do not
# depend on the batch size; layer 2 has one output, so K-FOC_running is exact.
if awk -F'\t' 'NR > 1 {
        for (i = 5; i <= 12; i++) if (!($i >= 0 && $i < 1.5)) bad = "range"
        if ($2 == 300) for (l = 0; l < 2; l++) {
            a = $(7 + 4 * l); r = $(8 + 4 * l); k = $(6 + 4 * l)
            if (a - r > 1e-5 || r - a > 1e-5 || r > k + 1e-6) bad = "full batch" }
        if (!($13 >= 0 && $13 < 1.5)) bad = "coupling range"
        if ($1 in d1 && (d1[$1] != $5 || k1[$1] != $6 || t1[$1] != $13)) bad = "batch-independent"
        d1[$1] = $5; k1[$1] = $6; t1[$1] = $13
        if ($12 > 1e-5) bad = "one output" }
    END { if (bad) { print bad; exit 1 } }' "$WORK/fs.tsv" >"$WORK/why"; then
    ok "the errors satisfy what the methods guarantee"
else not_ok "the errors satisfy what the methods guarantee ($(cat "$WORK/why"))"; fi
# Layer 2 has one output: with the g side normalised (the default) both K-FOC
# aggregations are exact at every batch size, to round-off; with the ā side K-FOC_approx
# averages unit matrices and is not, below the whole set.
if awk -F'\t' 'NR > 1 && ($11 > 1e-10 || $12 > 1e-10) { bad = 1 } END { exit bad }' "$WORK/fs.tsv"; then
    ok "a single-output layer is fitted exactly by both K-FOC aggregations"
else not_ok "a single-output layer is fitted exactly by both K-FOC aggregations"; fi
expect_status 0 "the study with the activation side normalised" -- "$KFAC" -q --fisher-study \
    --set study.kfoc_normalise=activation --log "$WORK/fs-act.tsv" "$WORK/study.ini"
if awk -F'\t' 'NR > 1 && $2 == 1 && $11 < 1e-3 { bad = 1 } END { exit bad }' "$WORK/fs-act.tsv"; then
    ok "normalising the activation side makes K-FOC_approx inexact there"
else not_ok "normalising the activation side makes K-FOC_approx inexact there"; fi
# What a run used, exported, reproduces its table through an independent brute force.
for side in gradient activation; do
    rm -rf "$WORK/export"
    expect_status 0 "the study exports what it used ($side)" -- "$KFAC" -q --fisher-study \
        --set study.seeds=1 --set study.kfoc_normalise=$side --set study.export="$WORK/export" \
        --log "$WORK/fs-exp.tsv" --force "$WORK/study.ini"
    if "$top_builddir/tests/fisher-brute" "$WORK/export/seed-1" $side relu linear -- 1 10 0 \
        >"$WORK/brute" 2>"$WORK/brute.err" &&
        sed 1d "$WORK/fs-exp.tsv" | cut -f2,5-12 | paste - "$WORK/brute" |
        awk -F'\t' '{ if ($1 != $10) bad = 1; for (i = 2; i <= 9; i++) { d = $i - $(i + 9); if (d > 2e-5 || d < -2e-5) bad = 1 } }
                     END { exit bad || NR != 3 }'; then
        ok "the exported run reproduces the table by brute force ($side)"
    else
        not_ok "the exported run reproduces the table by brute force ($side)"
        sed 's/^/#   /' "$WORK/brute.err" "$WORK/brute" "$WORK/fs-exp.tsv" | head -12
    fi
done
# The training log's Fisher probe exports what it measured too, and the brute force
# recomputes the log's figures (one batch of the probe's cases: K-FOC_running is the fit).
expect_status 0 "the training log's Fisher probe exports what it used" -- "$KFAC" -q \
    --log "$WORK/probe.tsv" --set log.fisher_error_every=10 --set log.fisher_error_cases=25 \
    --set train.iterations=20 --set log.fisher_export="$WORK/probe" "$WORK/study.ini"
if "$top_builddir/tests/fisher-brute" "$WORK/probe/iter-20" gradient relu linear -- 0 >"$WORK/pb" 2>"$WORK/pb.err" &&
    awk -F'\t' 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i }
         END { print $(col["fisher_diag_1"]), $(col["fisher_kfac_1"]), $(col["fisher_kfoc_1"]),
                     $(col["fisher_diag_2"]), $(col["fisher_kfac_2"]), $(col["fisher_kfoc_2"]) }' \
        "$WORK/probe.tsv" >"$WORK/plog" &&
    awk '{ print $2, $3, $5, $6, $7, $9 }' "$WORK/pb" | paste -d' ' - "$WORK/plog" |
    awk '{ for (i = 1; i <= 6; i++) { d = $i - $(i + 6); if (d > 2e-5 || d < -2e-5) bad = 1 } } END { exit bad || NR != 1 }'; then
    ok "and the brute force reproduces the logged Fisher errors"
else
    not_ok "and the brute force reproduces the logged Fisher errors"
    sed 's/^/#   /' "$WORK/pb.err" "$WORK/pb" "$WORK/plog" | head
fi
expect_status 2 "an existing probe export is not written into" -- "$KFAC" -q --log "$WORK/probe2.tsv" \
    --set log.fisher_error_every=10 --set log.fisher_export="$WORK/probe" "$WORK/study.ini"
expect_grep "$WORK/err" "log.fisher_export = .*probe exists; give --force" "naming the key"
ls "$WORK/export/seed-1" | tr '\n' ' ' >"$WORK/files"
[ "$(cat "$WORK/files")" = "inputs.npy order.npy output_grads.npy weights-1.npy weights-2.npy " ] \
    && ok "the export holds inputs, order, output gradients and weights" \
    || not_ok "the export holds inputs, order, output gradients and weights: $(cat "$WORK/files")"
expect_status 2 "an export is not overwritten" -- "$KFAC" -q --fisher-study --set study.seeds=1 \
    --set study.export="$WORK/export" --log "$WORK/fs-exp2.tsv" "$WORK/study.ini"
expect_grep "$WORK/err" "seed-1 exists; give --force" "and says how to replace it"
expect_status 0 "the table is reproducible" -- "$KFAC" -q --fisher-study --log "$WORK/fs2.tsv" "$WORK/study.ini"
cmp -s "$WORK/fs.tsv" "$WORK/fs2.tsv" && ok "the same seeds give the same table" || not_ok "the same seeds give the same table"
[ ! -s "$WORK/err" ] && ok "--quiet prints nothing" || not_ok "--quiet prints nothing"

cp "$WORK/fs.tsv" "$WORK/fs.keep"
expect_status 2 "an existing table is not overwritten" -- "$KFAC" --fisher-study --log "$WORK/fs.tsv" "$WORK/study.ini"
cmp -s "$WORK/fs.tsv" "$WORK/fs.keep" && ok "the old table is intact" || not_ok "the old table is intact"
expect_status 2 "a bad batch size is refused" -- "$KFAC" --fisher-study --log "$WORK/bad.tsv" \
    --set study.batch_sizes=1,ten "$WORK/study.ini"
expect_grep "$WORK/err" "study.batch_sizes: 'ten' is neither a positive integer nor 'full'" "the bad size is named"
[ ! -e "$WORK/bad.tsv" ] && ok "no table is left by a configuration error" || not_ok "no table is left by a configuration error"
expect_status 2 "missing data stop the study before it starts" -- "$KFAC" --fisher-study --log "$WORK/bad.tsv" \
    --set data.train="$WORK/none.csv" "$WORK/study.ini"
expect_grep "$WORK/err" "none.csv: cannot open" "the missing file is named"
[ ! -e "$WORK/bad.tsv" ] && ok "no table is left by a data error" || not_ok "no table is left by a data error"

# A convolutional network: the two convolutions of study.layers = 1-3 (not the pooling
# between them, nor the dense layer after), with KFC's factors for K-FAC.
make_bars 200
cat >"$WORK/conv.ini" <<INI
[data]
train = bars-images.gz
train_targets = bars-labels.gz
task = classification
[model]
layers = 1x8x8-conv(3,3,pad=1):tanh-maxpool(2)-conv(4,2):tanh-flatten-16:softmax
init = he
[optimizer]
learning_rate = 0.1
[train]
iterations = 30
batch_size = 20
[log]
eval_every = 0
[study]
seeds = 2
batch_sizes = 1,full
layers = 1-3
INI
expect_status 0 "the conv Fisher study runs" -- "$KFAC" --fisher-study --log "$WORK/conv.tsv" "$WORK/conv.ini"
expect_grep "$WORK/err" "^layer 1 (conv 1x8x8 -> 3x8x8)" "the summary names the convolution"
expect_grep "$WORK/err" "^layer 3 (conv 3x4x4 -> 4x3x3)" "and the second"
[ "$(head -n 1 "$WORK/conv.tsv")" = "$(printf 'seed\tbatch_size\tbatches\ttrain_acc\tdiag_1\tkfac_1\tkfoc_approx_1\tkfoc_running_1\tdiag_3\tkfac_3\tkfoc_approx_3\tkfoc_running_3\tkfoc_iterations')" ] \
    && ok "the conv table's columns (layers 1 and 3, no coupling)" \
    || not_ok "the conv table's columns: $(head -n 1 "$WORK/conv.tsv")"
# KFC's |T| Ω ⊗ Γ can be further from F than 0 is (its error above 1) when the per-position
# terms of a case's gradient cancel, as they do here.
if awk -F'\t' 'NR > 1 {
        for (i = 5; i <= 12; i++) if (!($i > 0 && $i < 5)) bad = "range"
        if ($2 == 200) for (l = 0; l < 2; l++) {
            a = $(7 + 4 * l); r = $(8 + 4 * l); k = $(6 + 4 * l)
            if (a - r > 1e-5 || r - a > 1e-5 || r > k + 1e-6) bad = "full batch" } }
    END { if (bad) { print bad; exit 1 } }' "$WORK/conv.tsv" >"$WORK/why"; then
    ok "the conv errors satisfy what the methods guarantee"
else not_ok "the conv errors satisfy what the methods guarantee ($(cat "$WORK/why"))"; fi
expect_status 2 "study.layers out of range is refused" -- "$KFAC" --fisher-study --log "$WORK/bad.tsv" \
    --set study.layers=2-9 "$WORK/conv.ini"
expect_grep "$WORK/err" "study.layers = '2-9': expected FIRST-LAST (or one layer) within the network's layers 1-5" \
    "the range is named"
expect_status 2 "study.layers without parameters is refused" -- "$KFAC" --fisher-study --log "$WORK/bad.tsv" \
    --set study.layers=2 "$WORK/conv.ini"
expect_grep "$WORK/err" "study.layers = '2' holds no layer with parameters" "and says why"

# The one-command wrapper: table, summary and (with gnuplot) the plot.
KFAC_TRAIN=$KFAC "$top_srcdir/tools/kfac-fisher-study" "$WORK/study.ini" "$WORK/results" -q >"$WORK/out.txt" 2>"$WORK/err"
status=$?
[ -s "$WORK/results/fisher-study.tsv" ] && ok "the wrapper writes the table" || not_ok "the wrapper writes the table"
if command -v gnuplot >/dev/null 2>&1; then
    [ "$status" -eq 0 ] && [ -s "$WORK/results/fisher-study.png" ] && ok "the wrapper plots the PNG" \
        || not_ok "the wrapper plots the PNG (exit $status)"
    expect_status 2 "the wrapper does not overwrite a plot" -- env KFAC_TRAIN="$KFAC" \
        "$top_srcdir/tools/kfac-fisher-study" "$WORK/study.ini" "$WORK/results"
else
    [ "$status" -eq 3 ] && ok "without gnuplot the wrapper exits 3" || not_ok "without gnuplot the wrapper exits 3 (exit $status)"
fi
# Without the plotter (GNUPLOT names one that is not there, whether or not gnuplot is):
# the table is kept, the exit status is 3 and the message says why.
expect_status 3 "without its plotter the wrapper exits 3" -- env GNUPLOT=no-such-gnuplot \
    "$top_srcdir/tools/kfac-fisher-study" -r "$WORK/study.ini" "$WORK/results"
expect_grep "$WORK/err" "no-such-gnuplot is not installed" "and says why"
[ -s "$WORK/results/fisher-study.tsv" ] && ok "and the table is kept" || not_ok "and the table is kept"

# The Fisher pictures. A linear layer under the squared loss has g = the output Fisher's
# columns e_j whatever the input, so its Fisher is exactly Ā ⊗ I: K-FAC's error is 0.
cat >"$WORK/lin.ini" <<INI
[data]
train = reg.csv
task = regression
target_columns = x3,y
[model]
layers = 2-2:linear
[train]
iterations = 5
batch_size = 30
[study]
heatmap_layers = 1
heatmap_cases = 200
INI
mkdir "$WORK/pics"
expect_status 0 "the Fisher pictures of a linear layer" -- "$KFAC" --fisher-pictures "$WORK/pics" "$WORK/lin.ini"
expect_grep "$WORK/err" "layers 1-1 (6 parameters) over 200 cases" "the summary names layers, size and cases"
expect_grep "$WORK/err" "relative Frobenius error 0.0000," "K-FAC is exact for a linear layer under the squared loss"
# PNG width and height: big-endian at bytes 16-23.
png_size() { od -An -tu1 -j16 -N8 "$1" | awk '{ printf "%d %d", $1*16777216+$2*65536+$3*256+$4, $5*16777216+$6*65536+$7*256+$8 }'; }
for f in fisher-exact fisher-kfac fisher-difference fisher-kfac-tridiag; do
    [ "$(png_size "$WORK/pics/$f.png")" = "6 6" ] && ok "$f.png is 6 x 6" || not_ok "$f.png is $(png_size "$WORK/pics/$f.png")"
done
# Two linear layers under the squared loss: every g is fixed by the output-Fisher column
# alone, so the coupling block is exactly Ā_12 ⊗ G_12 and, with two layers, block-tridiagonal
# K-FAC is the exact Fisher while the block-diagonal one is not.
mkdir "$WORK/lin2"
expect_status 0 "the Fisher pictures of two linear layers" -- "$KFAC" --fisher-pictures "$WORK/lin2" \
    --set model.layers=2-3:linear-2:linear --set study.heatmap_layers=1-2 "$WORK/lin.ini"
expect_grep "$WORK/err" "block-tridiagonal K-FAC .*: relative Frobenius error 0.0000 on those blocks, 0.0000 overall" \
    "block-tridiagonal K-FAC is exact for two linear layers"
err=$(sed -n 's/.*relative Frobenius error \([0-9.]*\), of which.*/\1/p' "$WORK/err")
awk -v e="$err" 'BEGIN { exit !(e > 0.01) }' && ok "and block-diagonal K-FAC is not ($err)" \
    || not_ok "block-diagonal K-FAC's error on two linear layers: '$err'"
cat >"$WORK/deep.ini" <<INI
[data]
train = reg.csv
task = regression
target_columns = y
standardize = true
[model]
layers = 3-5:tanh-4:tanh-1:linear
[train]
iterations = 20
batch_size = 30
[study]
heatmap_layers = 2-3
INI
mkdir "$WORK/deep"
expect_status 0 "the Fisher pictures of two hidden layers" -- "$KFAC" --fisher-pictures "$WORK/deep" "$WORK/deep.ini"
[ "$(png_size "$WORK/deep/fisher-exact.png")" = "29 29" ] && ok "layers 2-3 give a 24 + 5 = 29 square picture" \
    || not_ok "layers 2-3 picture: $(png_size "$WORK/deep/fisher-exact.png")"
err=$(sed -n 's/.*relative Frobenius error \([0-9.]*\), of which the blocks off the diagonal carry \([0-9.]*\)/\1 \2/p' "$WORK/err")
awk -v e="$err" 'BEGIN { split(e, a, " "); exit !(a[1] > 0.01 && a[1] < 1.5 && a[2] <= a[1] + 1e-4) }' \
    && ok "deeper layers: K-FAC's error ($err) is positive and at least the off-diagonal blocks' share" \
    || not_ok "deeper layers: errors '$err'"
cp "$WORK/deep/fisher-exact.png" "$WORK/keep.png"
expect_status 2 "existing pictures are not overwritten" -- "$KFAC" --fisher-pictures "$WORK/deep" "$WORK/deep.ini"
expect_grep "$WORK/err" "fisher-exact.png exists" "the refusal names the picture"
cmp -s "$WORK/deep/fisher-exact.png" "$WORK/keep.png" && ok "the old picture is intact" || not_ok "the old picture is intact"
expect_status 2 "a layer range outside the network is refused" -- "$KFAC" --fisher-pictures "$WORK/deep" \
    --set study.heatmap_layers=2-4 "$WORK/deep.ini"
expect_grep "$WORK/err" "study.heatmap_layers = '2-4': expected FIRST-LAST" "the key is named"
expect_status 2 "the study and the pictures are separate runs" -- "$KFAC" --fisher-study --fisher-pictures "$WORK/deep" "$WORK/deep.ini"
finish
