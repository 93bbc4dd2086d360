#!/bin/sh
# tests/firstrun.sh: what a newcomer's first runs show. The progress line under a
# pseudo-terminal (script(1)): its fields, a dash and never "nan" before the first
# evaluation, and a cleared line before the summary, which names the log and how to plot
# it; no progress line without a terminal. The log file named after the configuration in
# the working directory, never overwritten (a numbered sibling instead), --log - on
# standard output, a resumed run appending to the log beside its checkpoint, and the plot
# the summary points to (a PNG of the expected size, when gnuplot is installed). A
# shortened quickstart (K-FAC, fixed seed) on CURVES images standing in for MNIST lowers
# the reconstruction error below a bound, and its SGD twin runs. No check reads a clock.
. "$top_srcdir/tests/lib.sh"
GEN="$top_builddir/tools/kfac-datagen"
"$GEN" curves --seed 3 --train 600 --test 10 "$WORK/data" >/dev/null
CONFIGS=$(cd "$top_srcdir/configs" && pwd)
Q=$CONFIGS/quickstart.ini
TOOLS=$(cd "$top_srcdir/tools" && pwd)
SHORT="--set data.train=$WORK/data/curves-train-images-idx3-ubyte.gz --set train.iterations=30 --set train.batch_size=250 --set log.eval_every=10"
KFAC_ABS=$(cd "$(dirname "$KFAC")" && pwd)/$(basename "$KFAC")
mkdir "$WORK/run"

# The shortened quickstart, twice from the same directory: quickstart.tsv, then
# quickstart-2.tsv, the first left as it was.
# shellcheck disable=SC2086 # SHORT is a word list
expect_status 0 "the quickstart trains (shortened)" -- sh -c "cd '$WORK/run' && '$KFAC_ABS' $SHORT '$Q'"
[ -s "$WORK/run/quickstart.tsv" ] && ok "its log is quickstart.tsv in the working directory" ||
    not_ok "its log is quickstart.tsv in the working directory"
expect_grep "$WORK/err" "the log is quickstart.tsv; plot it with tools/kfac-plot -a -o quickstart.png quickstart.tsv" \
    "the summary names the log and how to plot it"
expect_grep "$WORK/err" "30 of 30 iterations" "and how far it got"
[ -s "$WORK/out" ] && not_ok "nothing on standard output" || ok "nothing on standard output"
err=$(column_values "$WORK/run/quickstart.tsv" train_recon | tail -n 1)
first=$(column_values "$WORK/run/quickstart.tsv" train_recon | head -n 1)
if awk -v e="$err" -v f="$first" 'BEGIN { exit !(e < 40 && e < 0.8 * f) }'; then
    ok "K-FAC lowers the reconstruction error (from $first at iteration 10 to $err)"
else
    not_ok "K-FAC lowers the reconstruction error (from $first at iteration 10 to $err; wanted < 40 and < 0.8 of it)"
fi
grep -q '^type = kfac' "$Q" && ok "the quickstart is K-FAC" || not_ok "the quickstart is K-FAC"
cksum <"$WORK/run/quickstart.tsv" >"$WORK/sum"
# shellcheck disable=SC2086
expect_status 0 "a second run beside it" -- sh -c "cd '$WORK/run' && '$KFAC_ABS' -q $SHORT '$Q'"
[ -s "$WORK/run/quickstart-2.tsv" ] && ok "writes quickstart-2.tsv" || not_ok "writes quickstart-2.tsv"
cksum <"$WORK/run/quickstart.tsv" | cmp -s - "$WORK/sum" && ok "and leaves quickstart.tsv as it was" ||
    not_ok "and leaves quickstart.tsv as it was"
: >"$WORK/run/quickstart-3.tsv.ckpt"
# shellcheck disable=SC2086
expect_status 0 "a stray checkpoint's name is skipped too" -- sh -c "cd '$WORK/run' && '$KFAC_ABS' -q $SHORT '$Q'"
[ -s "$WORK/run/quickstart-4.tsv" ] && [ ! -e "$WORK/run/quickstart-3.tsv" ] && ok "the run went to quickstart-4.tsv" ||
    not_ok "the run went to quickstart-4.tsv"

# --log - keeps standard output for pipelines.
# shellcheck disable=SC2086
expect_status 0 "--log - writes the log to standard output" -- sh -c "cd '$WORK/run' && '$KFAC_ABS' -q --log - $SHORT '$Q'"
head -n 1 "$WORK/out" | grep -q '^iter	seconds	batch	objective' && [ "$(wc -l <"$WORK/out")" -eq 31 ] &&
    ok "with its header and 30 rows" || not_ok "with its header and 30 rows"
[ ! -e "$WORK/run/quickstart-5.tsv" ] && ok "and no file" || not_ok "and no file"

# A resumed run appends to the log beside its checkpoint.
# shellcheck disable=SC2086
expect_status 0 "a run with a checkpoint" -- sh -c "cd '$WORK/run' && '$KFAC_ABS' -q $SHORT --set train.iterations=10 --set train.checkpoint_every=10 --log r.tsv '$Q'"
# shellcheck disable=SC2086
expect_status 0 "resumed without --log" -- sh -c "cd '$WORK/run' && '$KFAC_ABS' -q $SHORT --set train.iterations=20 --resume r.tsv.ckpt '$Q'"
[ "$(wc -l <"$WORK/run/r.tsv")" -eq 21 ] && ok "appends to r.tsv" || not_ok "appends to r.tsv ($(wc -l <"$WORK/run/r.tsv") lines)"

# The progress line, on a terminal.
if command -v script >/dev/null 2>&1 && script -qec true /dev/null >/dev/null 2>&1; then
    # shellcheck disable=SC2086
    script -qec "cd '$WORK/run' && '$KFAC_ABS' $SHORT --log p.tsv '$Q'" "$WORK/tty" >/dev/null 2>&1
    tr '\r' '\n' <"$WORK/tty" >"$WORK/lines"
    expect_grep "$WORK/lines" "^iteration 1/30 \[\.*\] [0-9.]* it/s, [0-9]*:[0-9][0-9] left  objective [0-9.e+-]*  train recon -  lambda [0-9.e+-]* gamma [0-9.e+-]*" \
        "the progress line: iteration, bar, rate, time left, objective, a dash before the first evaluation, lambda and gamma"
    grep -q "iteration [0-9]*/30 \[#*\.*\] .*train recon [0-9]" "$WORK/lines" &&
        ok "then the last evaluated error" || not_ok "then the last evaluated error"
    grep -qiw nan "$WORK/lines" && not_ok "no nan on the terminal" || ok "no nan on the terminal"
    # The summary starts on a cleared line: carriage return, erase to the end, then it.
    if grep -q "$(printf '\r\033\\[Kkfac-train: 30 of 30')" "$WORK/tty"; then
        ok "the line is cleared before the summary"
    else
        not_ok "the line is cleared before the summary"
    fi
    # Under a time budget the line counts seconds of it.
    # shellcheck disable=SC2086
    script -qec "cd '$WORK/run' && '$KFAC_ABS' $SHORT --set train.iterations=1000000000 --set train.max_seconds=1 --log s.tsv '$Q'" "$WORK/tty" >/dev/null 2>&1
    tr '\r' '\n' <"$WORK/tty" | grep -q '^[0-9]*/1 s \[[#.]*\] ' && ok "a time budget is counted in seconds" ||
        not_ok "a time budget is counted in seconds"
    # shellcheck disable=SC2086
    script -qec "cd '$WORK/run' && '$KFAC_ABS' -q $SHORT --log q.tsv '$Q'" "$WORK/tty" >/dev/null 2>&1
    grep -q "iteration 1/30" "$WORK/tty" && not_ok "--quiet draws no progress line" || ok "--quiet draws no progress line"
else
    echo "# script(1) not found or no pseudo-terminal: not checking the progress line"
fi
# shellcheck disable=SC2086
expect_status 0 "without a terminal" -- sh -c "cd '$WORK/run' && '$KFAC_ABS' $SHORT --log n.tsv '$Q'"
grep -q "it/s" "$WORK/err" && not_ok "there is no progress line" || ok "there is no progress line"

# The plot the summary points to, here with two logs overlaid: a PNG of 1200 x 900 (the
# size of kfac-plot's four panels).
if command -v gnuplot >/dev/null 2>&1; then
    expect_status 0 "the summary's plot command draws the logs" -- sh -c "cd '$WORK/run' && '$TOOLS/kfac-plot' -a -o quickstart.png quickstart.tsv quickstart-2.tsv"
    size=$(od -An -tu1 -j16 -N8 "$WORK/run/quickstart.png" | awk '{ printf "%d x %d", $3 * 256 + $4, $7 * 256 + $8 }')
    if [ "$(od -An -c -j1 -N3 "$WORK/run/quickstart.png" | tr -d ' ')" = PNG ] && [ "$size" = "1200 x 900" ]; then
        ok "a PNG of 1200 x 900"
    else
        not_ok "a PNG of 1200 x 900 (got '$size')"
    fi
else
    echo "# gnuplot not found: not drawing the plot"
fi

# The SGD twin the quickstart's comment points to.
# shellcheck disable=SC2086
expect_status 0 "configs/quickstart-sgd.ini trains" -- sh -c "cd '$WORK/run' && '$KFAC_ABS' -q $SHORT --set train.iterations=50 '$CONFIGS/quickstart-sgd.ini'"
[ -s "$WORK/run/quickstart-sgd.tsv" ] && ok "into quickstart-sgd.tsv" || not_ok "into quickstart-sgd.tsv"
grep -q "quickstart-sgd.ini" "$Q" && ok "the quickstart names its SGD twin" || not_ok "the quickstart names its SGD twin"
finish
