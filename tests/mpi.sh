#!/bin/sh
# tests/mpi.sh: data-parallel runs over MPI (./configure --with-mpi) against one process.
# From the same configuration and seed, 20 K-FAC iterations on 2 and on 3 ranks
# (block-diagonal, block-tridiagonal and K-FOC factors on a dense autoencoder; KFC and
# K-FOC blocks on a LeNet-5-shaped network; SGD) must log the objective, lambda, gamma,
# alpha and mu of the single process (and its Fisher errors) and end at its parameters,
# within 1e-4 relative (float sums in another order are the only difference; measured:
# at most 1e-5), with the ranks' parameter checksum compared every iteration. A batch of
# 50 does not divide by 3. Both ways of train.preconditioning take the same steps. A
# checkpoint of 2 ranks resumes on 1 and on 3 and continues the same run; a rank killed
# mid-run ends all within 30 s and leaves the log and checkpoint whole; a rank that
# cannot read its data stops all with its own message.
# Skipped (exit 77) when the build has no MPI or no mpirun is found.
. "$top_srcdir/tests/lib.sh"
"$KFAC" --version | grep -q '^mpi:' || { echo "SKIP: built without MPI (./configure --with-mpi)"; exit 77; }
command -v mpirun >/dev/null 2>&1 || { echo "SKIP: no mpirun"; exit 77; }
# Open MPI refuses root without these, and more ranks than cores without --oversubscribe.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
MPIRUN="mpirun"
mpirun --version 2>&1 | grep -q "Open MPI" && MPIRUN="mpirun --oversubscribe"
# mpirun looks for a relative program in PATH.
case $KFAC in /*) ;; *) KFAC="$(pwd)/$KFAC" ;; esac

make_bars 600
cat >"$WORK/ae.ini" <<INI
[data]
train = bars-images.gz
test_fraction = 0.2
[model]
layers = 64-16:logistic-64:logistic
[optimizer]
type = kfac
lambda = 1
[train]
iterations = 20
batch_size = 50
threads = 1
rank_check_every = 1
checkpoint_every = 10
[log]
eval_every = 10
INI
cat >"$WORK/lenet.ini" <<INI
[data]
train = bars-images.gz
train_targets = bars-labels.gz
task = classification
test_fraction = 0.2
[model]
layers = 1x8x8-conv(6,3,pad=1):relu-maxpool(2)-conv(16,3,pad=1):relu-maxpool(2)-flatten-120:relu-84:relu-16:softmax
init = he
[optimizer]
type = kfac
lambda = 1
stats_fraction = 0.5
[train]
iterations = 20
batch_size = 50
threads = 1
rank_check_every = 1
checkpoint_every = 10
[log]
eval_every = 10
INI

# worst A B COLUMNS: the largest relative difference of the comma-separated columns of
# two logs, row by row (values below 0.01 compared on the scale of 0.01).
worst() {
    awk -F'\t' -v cols="$3" '
        BEGIN { n = split(cols, want, ",") }
        FNR == 1 { for (i = 1; i <= NF; i++) at[FILENAME, $i] = i; next }
        FILENAME == ARGV[1] { for (j = 1; j <= n; j++) a[FNR, j] = $(at[FILENAME, want[j]]); next }
        { for (j = 1; j <= n; j++) {
              x = a[FNR, j]; y = $(at[FILENAME, want[j]])
              if (x == "nan" || y == "nan") { if (x != y) w = 1e9; continue }
              s = x < 0 ? -x : x; t = y < 0 ? -y : y; s = s > t ? s : t; s = s > 0.01 ? s : 0.01
              d = (x - y) / s; d = d < 0 ? -d : d; if (d > w) w = d } rows++ }
        END { printf "%.3g\n", rows ? w : 1e9 }' "$1" "$2"
}
COLS=objective,lambda,gamma,alpha,mu
# wait_rows LOG: until LOG has 30 lines (at most 30 s): a run in the background is under way.
wait_rows() {
    i=0
    while [ "$i" -lt 300 ] && ! { [ -f "$1" ] && [ "$(wc -l <"$1")" -ge 30 ]; }; do
        sleep 0.1
        i=$((i + 1))
    done
}
within() { awk -v d="$1" 'BEGIN { exit !(d <= 1e-4) }'; }

# agree NAME: NAME-1.tsv against NAME-2.tsv and NAME-3.tsv, logs and parameters.
agree() {
    for np in 2 3; do
        d=$(worst "$WORK/$1-1.tsv" "$WORK/$1-$np.tsv" $COLS)
        p=$("$MKFIXTURE" ckpt-diff "$WORK/$1-1.tsv.ckpt" "$WORK/$1-$np.tsv.ckpt" net.params)
        within "$d" && within "$p" && ok "$1: $np ranks agree with one process (figures $d, parameters $p)" ||
            not_ok "$1: $np ranks against one process: figures $d, parameters $p"
    done
}

# run NAME CONFIG SETTINGS...: NAME-N.tsv from 1, 2 and 3 ranks.
run() {
    name=$1 ini=$2
    shift 2
    expect_status 0 "$name on one process" -- "$KFAC" -q --log "$WORK/$name-1.tsv" "$@" "$ini"
    for np in 2 3; do
        expect_status 0 "$name on $np ranks" -- $MPIRUN -np $np "$KFAC" -q --log "$WORK/$name-$np.tsv" "$@" "$ini"
    done
    agree "$name"
}
run kfac "$WORK/ae.ini"
run tridiag "$WORK/ae.ini" --set optimizer.curvature=kfac-tridiag
run kfoc "$WORK/ae.ini" --set optimizer.curvature=kfoc
# Chunks of 2 cases: every rank keeps its share of K-FOC's 7 statistics cases chunk by chunk.
run kfoc-chunked "$WORK/ae.ini" --set optimizer.curvature=kfoc --set train.chunk_size=2
d=$(worst "$WORK/kfoc-1.tsv" "$WORK/kfoc-chunked-1.tsv" $COLS)
within "$d" && ok "and the kept cases fit as one chunk's do ($d)" ||
    not_ok "K-FOC in chunks of 2 against one chunk: figures $d"
run lenet "$WORK/lenet.ini"
run lenet-kfoc "$WORK/lenet.ini" --set optimizer.curvature=kfoc
run sgd "$WORK/ae.ini" --set optimizer.type=sgd --set optimizer.learning_rate=0.2
# The Fisher-error probe gathers its 40 cases from the ranks.
run fisher "$WORK/ae.ini" --set log.fisher_error_every=5 --set log.fisher_error_cases=40
# In chunks of 6 each rank forwards its share of them chunk by chunk and keeps their rows.
run fisher-chunked "$WORK/ae.ini" --set log.fisher_error_every=5 --set log.fisher_error_cases=40 \
    --set train.chunk_size=6
FISHER=fisher_diag_1,fisher_kfac_1,fisher_kfoc_1,fisher_diag_2,fisher_kfac_2,fisher_kfoc_2
for run in fisher fisher-chunked; do
    for np in 1 2 3; do
        [ "$run-$np" = fisher-1 ] && continue
        d=$(worst "$WORK/fisher-1.tsv" "$WORK/$run-$np.tsv" $FISHER)
        within "$d" && ok "$run: the Fisher errors on $np ranks agree with one chunk on one ($d)" ||
            not_ok "$run: the Fisher errors on $np ranks against one chunk on one process: $d"
    done
done
# Every rank applying every layer's inverse (train.preconditioning = every-rank) is the
# same computation as each its own layers' with the blocks gathered: the same to the bit.
expect_status 0 "kfac on 2 ranks, every rank preconditioning every layer" -- $MPIRUN -np 2 "$KFAC" -q \
    --log "$WORK/every-2.tsv" --set train.preconditioning=every-rank "$WORK/ae.ini"
d=$(worst "$WORK/kfac-2.tsv" "$WORK/every-2.tsv" $COLS,model_change,step_norm,grad_norm,train_recon)
p=$("$MKFIXTURE" ckpt-diff "$WORK/kfac-2.tsv.ckpt" "$WORK/every-2.tsv.ckpt" net.params)
[ "$d" = 0 ] && [ "$p" = 0 ] && ok "and takes the same steps as by layer, to the bit" ||
    not_ok "every-rank against by-layer preconditioning: figures $d, parameters $p"
rows=$(($(wc -l <"$WORK/kfac-2.tsv") - 1))
[ "$rows" -eq 20 ] && ok "rank 0 writes the log, a row per iteration" || not_ok "the 2-rank log has $rows rows"

# Resume the 2-rank checkpoint of iteration 10 on 1 and on 3 ranks: the same run.
for np in 1 3; do
    cp "$WORK/kfac-2.tsv.ckpt.1" "$WORK/resume-$np.tsv.ckpt"
    head -n 11 "$WORK/kfac-2.tsv" >"$WORK/resume-$np.tsv"
    launch=$MPIRUN
    [ "$np" -eq 1 ] && launch=""
    expect_status 0 "a 2-rank checkpoint resumes on $np rank(s)" -- $launch ${launch:+-np $np} "$KFAC" -q \
        --resume "$WORK/resume-$np.tsv.ckpt" "$WORK/ae.ini"
    d=$(worst "$WORK/kfac-2.tsv" "$WORK/resume-$np.tsv" $COLS)
    p=$("$MKFIXTURE" ckpt-diff "$WORK/kfac-2.tsv.ckpt" "$WORK/resume-$np.tsv.ckpt" net.params)
    within "$d" && within "$p" && ok "and continues the same run (figures $d, parameters $p)" ||
        not_ok "the resumed run on $np: figures $d, parameters $p"
done

# A rank killed mid-run: every rank ends within 30 s, not zero; the log's rows are whole
# and the last checkpoint resumes.
# (timeout: a hang would end there, and fail the test.)
timeout -s KILL 120 $MPIRUN -np 2 "$KFAC" -q --log "$WORK/kill.tsv" --set train.iterations=100000 \
    --set train.checkpoint_every=5 --set log.eval_every=0 --set model.layers=64-256:logistic-64:logistic \
    "$WORK/ae.ini" >"$WORK/kill.out" 2>&1 &
launcher=$!
wait_rows "$WORK/kill.tsv"
victim=$(pgrep -f "^$KFAC -q --log $WORK/kill.tsv" | tail -n 1) # a rank, not mpirun
if [ -n "$victim" ]; then
    start=$(date +%s)
    kill -KILL "$victim"
    wait "$launcher"
    status=$?
    took=$(($(date +%s) - start))
    [ "$status" -ne 0 ] && [ "$took" -le 30 ] && ok "a killed rank ends the run in ${took} s (exit $status)" ||
        not_ok "after a rank was killed: exit $status after $took s"
    awk -F'\t' 'NR == 1 { n = NF; next } NF != n { bad = 1 } END { exit bad }' "$WORK/kill.tsv" &&
        ok "the log's rows are whole" || not_ok "the log has a broken row"
    expect_status 0 "its last checkpoint resumes" -- "$KFAC" -q --resume "$WORK/kill.tsv.ckpt" \
        --set train.max_seconds=0.001 --set train.checkpoint_every=5 --set log.eval_every=0 \
        --set model.layers=64-256:logistic-64:logistic --set train.iterations=100000 "$WORK/ae.ini"
else
    not_ok "no rank of the run to kill"
    kill -KILL "$launcher" 2>/dev/null
fi

# SIGTERM to mpirun (as Ctrl-C's SIGINT), which sends SIGTERM to the ranks: they agree to
# stop after the same iteration, rank 0 writes the checkpoint, and it resumes. (Open MPI
# kills the ranks 1 s after SIGTERM unless odls_base_sigkill_timeout says otherwise: too
# short to be sure of the checkpoint on a loaded machine.) A background job ignores
# SIGINT, hence SIGTERM here; a watchdog ends a hang. A fast machine runs thousands of
# iterations before the signal, which is why λ has a floor when l2 = 0 (KFAC_DAMPING_MIN).
export OMPI_MCA_odls_base_sigkill_timeout=30
$MPIRUN -np 2 "$KFAC" -q --log "$WORK/int.tsv" --set train.iterations=10000000 \
    --set log.eval_every=0 "$WORK/ae.ini" >"$WORK/int.out" 2>&1 &
launcher=$!
(sleep 120; kill -KILL "$launcher") >/dev/null 2>&1 &
watchdog=$!
wait_rows "$WORK/int.tsv"
kill -TERM "$launcher"
wait "$launcher"
status=$?
kill "$watchdog" 2>/dev/null
[ "$status" -ne 0 ] && ok "SIGTERM to mpirun stops the ranks (exit $status)" || not_ok "SIGTERM: exit $status"
# (Rank 0 names the checkpoint on stderr, but Open MPI may drop that last line while it
# ends the job: the checkpoint itself is what is checked.)
[ -f "$WORK/int.tsv.ckpt" ] && ok "rank 0 wrote the checkpoint" || not_ok "no checkpoint after SIGTERM"
expect_status 0 "and it resumes" -- "$KFAC" -q --resume "$WORK/int.tsv.ckpt" --set train.max_seconds=0.001 \
    --set train.iterations=10000000 --set log.eval_every=0 "$WORK/ae.ini"

# data.shard = rank: each rank reads its own file. With the parameters left at their
# start (SGD, learning rate 1e-12), the error the ranks report over the training set is the
# shards' errors weighted by their cases (300 and 200), each from one process on that file.
"$MKFIXTURE" bars "$WORK/shard-0.gz" "$WORK/shard-l0.gz" 300 11
"$MKFIXTURE" bars "$WORK/shard-1.gz" "$WORK/shard-l1.gz" 200 12
sed 's/^train = bars-images.gz/train = shard-%r.gz\nshard = rank/; s/^test_fraction = 0.2/test_fraction = 0/' \
    "$WORK/ae.ini" >"$WORK/shard.ini"
still="--set optimizer.type=sgd --set optimizer.learning_rate=1e-12 --set optimizer.momentum=0 --set train.iterations=1"
expect_status 0 "a sharded run on 2 ranks" -- $MPIRUN -np 2 "$KFAC" -q --log "$WORK/shard.tsv" $still "$WORK/shard.ini"
for r in 0 1; do
    expect_status 0 "shard $r alone" -- "$KFAC" -q --log "$WORK/shard-$r.tsv" $still \
        --set data.shard=none --set data.train="$WORK/shard-$r.gz" "$WORK/shard.ini"
done
e=$(column_values "$WORK/shard.tsv" train_recon)
e0=$(column_values "$WORK/shard-0.tsv" train_recon)
e1=$(column_values "$WORK/shard-1.tsv" train_recon)
awk -v e="$e" -v a="$e0" -v b="$e1" 'BEGIN { w = (300 * a + 200 * b) / 500; d = (e - w) / w; exit !(d < 1e-5 && d > -1e-5) }' &&
    ok "the ranks evaluate their own shards ($e = (300 x $e0 + 200 x $e1) / 500)" ||
    not_ok "sharded evaluation: $e, shards $e0 and $e1"
expect_status 0 "a sharded K-FAC run on 2 ranks" -- $MPIRUN -np 2 "$KFAC" -q --log "$WORK/shardk.tsv" \
    --set train.iterations=40 "$WORK/shard.ini"
first=$(column_values "$WORK/shardk.tsv" train_recon | head -n 1)
last=$(column_values "$WORK/shardk.tsv" train_recon | tail -n 1)
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < 0.8 * a) }' && ok "trains ($first -> $last)" ||
    not_ok "the sharded run did not train ($first -> $last)"
expect_status 0 "and resumes from its checkpoint" -- $MPIRUN -np 2 "$KFAC" -q \
    --resume "$WORK/shardk.tsv.ckpt" --set train.iterations=45 "$WORK/shard.ini"
expect_status 2 "a rank without its shard stops the run" -- $MPIRUN -np 3 "$KFAC" -q \
    --log "$WORK/shard3.tsv" "$WORK/shard.ini"
expect_grep "$WORK/err" "rank 2: .*shard-2.gz: cannot open" "the message names the rank and its shard"

# A rank that cannot read the data (here: its own configuration names a missing file)
# stops every rank, with its message.
sed 's/^train = bars-images.gz/train = missing.gz/' "$WORK/ae.ini" >"$WORK/missing.ini"
$MPIRUN -np 1 "$KFAC" -q --log "$WORK/ok.tsv" "$WORK/ae.ini" : \
    -np 1 "$KFAC" -q --log "$WORK/bad.tsv" "$WORK/missing.ini" >"$WORK/out" 2>"$WORK/err"
status=$?
[ "$status" -ne 0 ] && ok "a rank without its data stops the run (exit $status)" ||
    not_ok "a rank without its data: exit $status"
expect_grep "$WORK/err" "rank 1: .*missing.gz" "the message names the rank and the file"
[ ! -s "$WORK/ok.tsv" ] || [ "$(wc -l <"$WORK/ok.tsv")" -le 1 ] && ok "and no iteration ran" ||
    not_ok "iterations ran beside a rank without data"
finish
