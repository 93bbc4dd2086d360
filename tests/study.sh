#!/bin/sh
# tests/study.sh: kfac-train --fisher-study and tools/kfac-fisher-study as a user meets
# them: the table's shape and the relations its errors must satisfy, the refusal to
# overwrite, configuration errors before any training, and the plot (or, without
# gnuplot, the table alone and exit status 3).
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
expect_grep "$WORK/err" "^layer 2 (8 -> 1)" "the summary names the layers"
[ "$(head -n 1 "$WORK/fs.tsv")" = "$(printf 'seed\tbatch_size\tbatches\ttrain_rmse\tdiag_1\tkfac_1\tkfoc_approx_1\tkfoc_running_1\tdiag_2\tkfac_2\tkfoc_approx_2\tkfoc_running_2\tkfoc_iterations')" ] \
    && ok "the table's columns" || not_ok "the table's columns: $(head -n 1 "$WORK/fs.tsv")"
[ "$(sed 1d "$WORK/fs.tsv" | wc -l)" -eq 9 ] && ok "one row per seed and batch size" \
    || not_ok "one row per seed and batch size ($(sed 1d "$WORK/fs.tsv" | wc -l))"
[ "$(cut -f1-3 "$WORK/fs.tsv" | sed 1d | tr '\t\n' ' ')" = "1 1 300 1 10 30 1 300 1 2 1 300 2 10 30 2 300 1 3 1 300 3 10 30 3 300 1 " ] \
    && ok "seeds, batch sizes ('full' is the 300 cases) and batch counts" \
    || not_ok "seeds, batch sizes and batch counts: $(cut -f1-3 "$WORK/fs.tsv" | sed 1d | tr '\t\n' ' ')"
# Per row: errors in [0, 1.5); on one batch of all cases both K-FOC aggregations are the
# Frobenius-optimal fit, so they agree and are at most K-FAC's; diag and K-FAC do not
# depend on the batch size; layer 2 has one output, so K-FOC_running is exact.
if awk -F'\t' 'NR > 1 {
        for (i = 5; i <= 12; i++) if (!($i >= 0 && $i < 1.5)) bad = "range"
        if ($2 == 300) for (l = 0; l < 2; l++) {
            a = $(7 + 4 * l); r = $(8 + 4 * l); k = $(6 + 4 * l)
            if (a - r > 1e-5 || r - a > 1e-5 || r > k + 1e-6) bad = "full batch" }
        if ($1 in d1 && (d1[$1] != $5 || k1[$1] != $6)) bad = "batch-independent"
        d1[$1] = $5; k1[$1] = $6
        if ($12 > 1e-5) bad = "one output" }
    END { if (bad) { print bad; exit 1 } }' "$WORK/fs.tsv" >"$WORK/why"; then
    ok "the errors satisfy what the methods guarantee"
else not_ok "the errors satisfy what the methods guarantee ($(cat "$WORK/why"))"; fi
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
    expect_grep "$WORK/err" "gnuplot is not installed" "and says why"
fi
finish
