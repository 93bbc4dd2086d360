#!/bin/sh
# tests/checkpoint.sh: checkpoints and resume as a user meets them: a run stopped by
# SIGINT (or SIGTERM) writes a checkpoint and says how to continue; the resumed run
# appends to the log and ends with the same state, to the bit, as a run never stopped;
# periodic checkpoints keep the last K; a checkpoint from another configuration, a
# damaged one, or a finished run is refused and leaves the log as it was; a non-finite
# iteration is tried again, and a run that cannot get past one stops with a checkpoint.
. "$top_srcdir/tests/lib.sh"
make_bars 600
cat >"$WORK/run.ini" <<INI
[data]
train = bars-images.gz
test_fraction = 0.2
[model]
layers = 64-30:logistic-8:linear-30:logistic-64:logistic
[optimizer]
type = kfac
inverse_every = 7
[train]
iterations = 700
batch_size = 100
polyak_start = 10
threads = 1
[log]
eval_every = 50
INI
items() { "$MKFIXTURE" ckpt-items "$1" | grep -v '^run.seconds '; }

# stop SIGNAL LOG: a very long run logging to LOG, sent SIGNAL once it has logged 20
# iterations (however slowly it starts: valgrind); its exit status must be 130.
stop() {
    "$KFAC" -q --log "$2" --set train.iterations=100000000 "$WORK/run.ini" 2>"$WORK/err" &
    pid=$!
    tries=0
    while [ "$(cat "$2" 2>/dev/null | wc -l)" -lt 21 ] && [ $tries -lt 600 ]; do
        sleep 0.1
        tries=$((tries + 1))
    done
    kill -"$1" $pid
    wait $pid
    got=$?
    [ "$got" -eq 130 ] && ok "SIG$1 stops the run with status 130" ||
        not_ok "SIG$1 stops the run with status 130 (got $got)"
}

# Stopped by SIGINT part of the way through.
stop INT "$WORK/cut.tsv"
expect_grep "$WORK/err" "Interrupt at iteration [0-9]*; the checkpoint .*cut.tsv.ckpt holds it: continue with --resume" \
    "it names the iteration and the checkpoint"
j=$(($(wc -l <"$WORK/cut.tsv") - 1))
[ "$j" -ge 1 ] && ok "it stopped after $j iterations" || not_ok "it stopped after some iterations"
total=$((j + 300))
expect_status 0 "the run resumes" -- "$KFAC" -q --log "$WORK/cut.tsv" --resume "$WORK/cut.tsv.ckpt" \
    --set train.checkpoint="$WORK/cut.ckpt" --set train.iterations=$total "$WORK/run.ini"
expect_status 0 "the same run never stopped" -- "$KFAC" -q --log "$WORK/whole.tsv" \
    --set train.checkpoint="$WORK/whole.ckpt" --set train.iterations=$total "$WORK/run.ini"
if items "$WORK/whole.ckpt" >"$WORK/a" && items "$WORK/cut.ckpt" >"$WORK/b" && cmp -s "$WORK/a" "$WORK/b"; then
    ok "the resumed run ends with the uninterrupted run's state, to the bit"
else
    not_ok "the resumed run ends with the uninterrupted run's state"; diff "$WORK/a" "$WORK/b" | sed 's/^/#   /' | head
fi
if [ "$(cut -f1 "$WORK/cut.tsv" | sed 1d | tr '\n' ' ')" = "$(seq 1 $total | tr '\n' ' ')" ]; then
    ok "the log holds each iteration once, the resumed rows appended"
else
    not_ok "the log holds each iteration once"
fi
# The evaluations differ where the stopped run evaluated its last iteration.
if [ "$(cut -f1,3-4 "$WORK/cut.tsv")" = "$(cut -f1,3-4 "$WORK/whole.tsv")" ]; then
    ok "with the same batch sizes and objectives"; else not_ok "with the same batch sizes and objectives"; fi

# SIGTERM too.
stop TERM "$WORK/term.tsv"
[ -s "$WORK/term.tsv.ckpt" ] && ok "with its checkpoint" || not_ok "with its checkpoint"

# A finished run, another configuration, a damaged file: refused, the log untouched.
cp "$WORK/cut.tsv" "$WORK/cut.before"
expect_status 2 "resuming a finished run is refused" -- "$KFAC" -q --log "$WORK/cut.tsv" \
    --resume "$WORK/cut.ckpt" --set train.iterations=$total "$WORK/run.ini"
expect_grep "$WORK/err" "at iteration $total already; raise train.iterations" "and says how to go on"
expect_status 2 "resuming with another configuration is refused" -- "$KFAC" -q --log "$WORK/cut.tsv" \
    --resume "$WORK/cut.ckpt" --set optimizer.lambda=10 --set train.iterations=$((total + 100)) "$WORK/run.ini"
expect_grep "$WORK/err" "another configuration: optimizer.lambda (was 150, now 10).*--force-resume" \
    "naming what differs"
# Keys that change the state's shape are named too, not only the state that differs.
expect_status 2 "resuming with another optimiser is refused" -- "$KFAC" -q --log "$WORK/cut.tsv" \
    --resume "$WORK/cut.ckpt" --set optimizer.type=sgd --set train.iterations=$((total + 100)) "$WORK/run.ini"
expect_grep "$WORK/err" "another configuration, whose state does not fit this one: optimizer.type (was kfac, now sgd)" \
    "naming optimizer.type"
expect_status 2 "resuming with eigendecomposed inverses is refused" -- "$KFAC" -q --log "$WORK/cut.tsv" \
    --resume "$WORK/cut.ckpt" --force-resume --set optimizer.inverse=eigen --set train.iterations=$((total + 100)) "$WORK/run.ini"
expect_grep "$WORK/err" "does not fit this one: optimizer.inverse (was auto, now eigen)" \
    "naming optimizer.inverse, even with --force-resume"
expect_status 2 "resuming with fewer cases is refused" -- "$KFAC" -q --log "$WORK/cut.tsv" \
    --resume "$WORK/cut.ckpt" --force-resume --set data.max_cases=300 --set train.iterations=$((total + 100)) "$WORK/run.ini"
expect_grep "$WORK/err" "does not fit this one: data.max_cases (was 0, now 300)" \
    "naming data.max_cases, even with --force-resume"
head -c 3000 "$WORK/cut.ckpt" >"$WORK/short.ckpt"
expect_status 2 "a truncated checkpoint is refused" -- "$KFAC" -q --log "$WORK/cut.tsv" \
    --resume "$WORK/short.ckpt" --set train.iterations=$((total + 100)) "$WORK/run.ini"
expect_grep "$WORK/err" "short.ckpt: truncated checkpoint" "as truncated"
# Forged checkpoints, their CRCs correct: each value is checked before anything is used.
forged() { # ITEM I TYPE V MESSAGE...: forge cut.ckpt so and expect a refusal naming the item
    if "$MKFIXTURE" ckpt-forge "$WORK/cut.ckpt" "$WORK/forged.ckpt" "$1" "$2" "$3" "$4"; then
        expect_status 2 "a checkpoint with $1[$2] = $4 is refused" -- "$KFAC" -q --log "$WORK/cut.tsv" \
            --resume "$WORK/forged.ckpt" --set train.iterations=$((total + 100)) "$WORK/run.ini"
        expect_grep "$WORK/err" "forged.ckpt: $5" "naming the item"
    else
        not_ok "forging $1[$2]"
    fi
}
forged run.iterations 0 i64 -5 "run.iterations holds -5 at element 0, less than 0"
forged batcher.perm 3 u64 1099511627776 \
    "batcher.perm is not a permutation of the [0-9]* cases: element 3 is 1099511627776, out of range"
cp "$WORK/cut.ckpt" "$WORK/cut.keep"
"$MKFIXTURE" ckpt-forge "$WORK/cut.keep" "$WORK/cut.ckpt" batcher.perm 0 u64 0
forged batcher.perm 1 u64 0 "batcher.perm is not a permutation .*: element 1 is 0, a repeat"
mv "$WORK/cut.keep" "$WORK/cut.ckpt"
forged batcher.pos 0 u64 1152921504606846976 \
    "batcher.pos holds 1152921504606846976 at element 0, more than 480"
forged run.seconds 0 f64 nan "run.seconds holds nan at element 0, not a finite number"
forged net.params 0 f64 inf "net.params holds nan at element 1, not a finite number"
forged kfac.lambda 0 f64 -1 "kfac.lambda holds -1 at element 0, less than 0"
cmp -s "$WORK/cut.tsv" "$WORK/cut.before" && ok "the log is untouched by the refusals" ||
    not_ok "the log is untouched by the refusals"
expect_status 0 "--force-resume continues with the new configuration" -- "$KFAC" -q \
    --log "$WORK/cut.tsv" --resume "$WORK/cut.ckpt" --force-resume --set optimizer.lambda=10 \
    --set train.iterations=$((total + 100)) "$WORK/run.ini"
[ "$(($(wc -l <"$WORK/cut.tsv") - 1))" -eq $((total + 100)) ] && ok "appending its 100 iterations" ||
    not_ok "appending its 100 iterations"
printf 'iter\tsomething_else\n1\t2\n' >"$WORK/other.tsv"
expect_status 2 "a log with other columns is not appended to" -- "$KFAC" -q --log "$WORK/other.tsv" \
    --resume "$WORK/cut.ckpt" --set train.iterations=$((total + 200)) "$WORK/run.ini"
expect_grep "$WORK/err" "other.tsv: the log's columns are not this run's" "and says so"
expect_status 2 "--resume is for training runs only" -- "$KFAC" --fisher-study --resume "$WORK/cut.ckpt" "$WORK/run.ini"
expect_status 2 "a new run will not overwrite the log" -- "$KFAC" -q --log "$WORK/cut.tsv" "$WORK/run.ini"

# Periodic checkpoints, the last three kept.
expect_status 0 "checkpoints every 200 iterations" -- "$KFAC" -q --log "$WORK/p.tsv" \
    --set train.checkpoint_every=200 --set train.checkpoint_keep=3 --set train.iterations=700 "$WORK/run.ini"
if [ -s "$WORK/p.tsv.ckpt" ] && [ -s "$WORK/p.tsv.ckpt.1" ] && [ -s "$WORK/p.tsv.ckpt.2" ] &&
   [ ! -e "$WORK/p.tsv.ckpt.3" ] && [ ! -e "$WORK/p.tsv.ckpt.next" ]; then
    ok "three are kept, nothing else left"; else not_ok "three are kept"; ls "$WORK" | sed 's/^/#   /'; fi
# The newest is the end (700), then 600, then 400: resuming from 600 redoes 601-700.
expect_status 0 "resuming from the one before the last" -- "$KFAC" -q --log "$WORK/p2.tsv" \
    --resume "$WORK/p.tsv.ckpt.1" --set train.checkpoint="$WORK/p2.ckpt" --set train.iterations=700 "$WORK/run.ini"
[ "$(head -n 2 "$WORK/p2.tsv" | tail -n 1 | cut -f1)" = 601 ] && ok "starts at iteration 601" ||
    not_ok "starts at iteration 601"
items "$WORK/p.tsv.ckpt" >"$WORK/a"
items "$WORK/p2.ckpt" >"$WORK/b"
cmp -s "$WORK/a" "$WORK/b" && ok "and ends where the first run ended" || not_ok "and ends where the first run ended"

# Divergence: a poisoned batch is caught before it reaches the parameters and the iteration
# is tried again with another batch and a larger lambda; a batch poisoned every time makes
# the run give up with status 1, naming the iteration, after a checkpoint of the last good
# iteration.
expect_status 2 "a malformed train.inject_nan is refused" -- "$KFAC" -n --set train.inject_nan=5:some "$WORK/run.ini"
expect_grep "$WORK/err" "train.inject_nan = '5:some': expected ITERATION\[:TRIES\] or ITERATION:all" "naming the key"
expect_status 0 "a poisoned batch is survived" -- "$KFAC" --set train.inject_nan=5 -q \
    --set optimizer.start=paper --log "$WORK/nan.tsv" --set train.iterations=40 "$WORK/run.ini"
expect_grep "$WORK/err" "iteration 5: the objective is not finite: the batch's inputs are not; the parameters were left unchanged; trying again with another batch and lambda = 1500 (retry 1 of 3)" \
    "the retry is announced with its reason and the new lambda"
[ "$(cut -f1 "$WORK/nan.tsv" | sed 1d | tr '\n' ' ')" = "$(seq 1 40 | tr '\n' ' ')" ] &&
    ok "every iteration is logged once" || not_ok "every iteration is logged once"
awk -F'\t' 'NR > 1 { for (i = 2; i <= NF; i++) if ($i == "nan" && i <= 4) bad = 1 } END { exit bad }' \
    "$WORK/nan.tsv" && ok "with finite objectives" || not_ok "with finite objectives"
expect_status 1 "a batch poisoned every time stops the run" -- "$KFAC" --set train.inject_nan=5:all -q \
    --log "$WORK/nan2.tsv" --set train.iterations=40 "$WORK/run.ini"
expect_grep "$WORK/err" "retry 3 of 3" "after three retries"
expect_grep "$WORK/err" "iteration 5: the objective is not finite: the batch's inputs are not.*gave up after 3 retries; the checkpoint .*nan2.tsv.ckpt holds iteration 4, the last good one" \
    "naming the iteration and the checkpoint of the last good one"
expect_status 0 "that checkpoint resumes" -- "$KFAC" -q --log "$WORK/nan2.tsv" \
    --resume "$WORK/nan2.tsv.ckpt" --set train.iterations=40 "$WORK/run.ini"
[ "$(sed -n 6p "$WORK/nan2.tsv" | cut -f1)" = 5 ] && ok "from iteration 5" || not_ok "from iteration 5"
expect_status 0 "SGD retries too" -- "$KFAC" --set train.inject_nan=3 -q --log "$WORK/sgd.tsv" \
    --set optimizer.type=sgd --set train.iterations=10 "$WORK/run.ini"
expect_grep "$WORK/err" "iteration 3: the objective is not finite: the batch's inputs are not; the parameters were left unchanged; trying again with another batch (retry 1 of 3)" \
    "with another batch"
expect_status 1 "train.retries = 0 gives up at once" -- "$KFAC" --set train.inject_nan=3 -q \
    --log "$WORK/r0.tsv" --set train.retries=0 --set train.iterations=10 "$WORK/run.ini"
expect_grep "$WORK/err" "gave up after 0 retries" "and says so"

# The outputs: never one file for two purposes, never a directory, and a checkpoint
# directory that exists, all found before training starts.
expect_status 2 "a checkpoint named as the log is refused" -- "$KFAC" -q --log "$WORK/same" \
    --set train.checkpoint="$WORK/same" --set train.checkpoint_every=5 "$WORK/run.ini"
expect_grep "$WORK/err" "same and the checkpoint file .*same are the same file" "the clash is named"
[ ! -e "$WORK/same" ] && ok "and nothing was written" || not_ok "and nothing was written"
printf 'my notes\n' >"$WORK/notes"
ln -s "$WORK/notes" "$WORK/notes-link"
expect_status 2 "a log that is the checkpoint through a link is refused, even with --force" -- "$KFAC" -q \
    --force --log "$WORK/notes-link" --set train.checkpoint="$WORK/notes" \
    --set train.checkpoint_every=5 "$WORK/run.ini"
expect_status 2 "so is a log that is a kept copy" -- "$KFAC" -q --log "$WORK/ck.1" \
    --set train.checkpoint="$WORK/ck" --set train.checkpoint_every=5 "$WORK/run.ini"
expect_grep "$WORK/err" "ck.1 and the checkpoint file .*ck.1 are the same file" "naming the copy"
expect_status 2 "a log on the checkpoint's file through another spelling is refused" -- "$KFAC" \
    -q --log "$WORK/./sub/../spelled" --set train.checkpoint="$WORK/spelled" "$WORK/run.ini"
[ "$(cat "$WORK/notes")" = "my notes" ] && ok "the linked file is untouched" ||
    not_ok "the linked file is untouched"
# Links planted where checkpoints are written never lead the writes elsewhere.
printf 'victim\n' >"$WORK/victim"
ln -s "$WORK/victim" "$WORK/planted.tsv.ckpt.next.tmp"
ln -s "$WORK/victim" "$WORK/planted.tsv.ckpt.next"
expect_status 0 "a run with links planted at the checkpoint's temporary names" -- "$KFAC" -q \
    --log "$WORK/planted.tsv" --set train.iterations=10 --set train.checkpoint_every=5 \
    "$WORK/run.ini"
[ "$(cat "$WORK/victim")" = victim ] && ok "leaves the linked file as it was" ||
    not_ok "leaves the linked file as it was"
items "$WORK/planted.tsv.ckpt" | grep -q '^run.iterations ' && ok "and writes a whole checkpoint" ||
    not_ok "and writes a whole checkpoint"
ln -s "$WORK/victim" "$WORK/linked.tsv"
expect_status 2 "--force does not truncate through a link planted as the log" -- "$KFAC" -q \
    --force --log "$WORK/linked.tsv" --set train.iterations=5 "$WORK/run.ini"
[ "$(cat "$WORK/victim")" = victim ] && ok "the linked file is kept" || not_ok "the linked file is kept"
mkdir "$WORK/adir"
expect_status 2 "a directory as the log is refused" -- "$KFAC" -q --log "$WORK/adir" "$WORK/run.ini"
expect_grep "$WORK/err" "adir: the log path is a directory" "and called a directory"
expect_status 2 "a missing checkpoint directory is found before training" -- "$KFAC" -q \
    --log "$WORK/nodir.tsv" --set train.checkpoint="$WORK/nodir/ck" "$WORK/run.ini"
expect_grep "$WORK/err" "nodir/ck: the checkpoints cannot be written there" "naming the directory"
[ ! -e "$WORK/nodir.tsv" ] && ok "before the log was created" || not_ok "before the log was created"
finish
