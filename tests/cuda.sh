#!/bin/sh
# tests/cuda.sh: the CUDA backend against the CPU backend. Every backend operation
# (tests/check_backend with KFAC_TEST_BACKEND=cuda), then whole runs from the same seed on
# cuda and on cpu: 20 K-FAC iterations of a dense autoencoder, of LeNet-5 (KFC blocks for
# the convolutions) and with K-FOC factors, whose objective, lambda, gamma, alpha and mu
# must agree (1e-3 relative: float GEMMs in another order, and eigenvectors from
# another solver), and a checkpoint written on the GPU that resumes on the CPU.
# Skipped (exit 77) with the reason when the build has no CUDA or no GPU is visible.
. "$top_srcdir/tests/lib.sh"
out=$(KFAC_TEST_BACKEND=cuda "$top_builddir/tests/check_backend" 2>&1)
status=$?
if [ "$status" -eq 77 ]; then
    echo "$out" | grep '^SKIP' || echo "SKIP: no CUDA backend"
    exit 77
fi
[ "$status" -eq 0 ] && ok "every backend operation on cuda matches the loop" ||
    { not_ok "every backend operation on cuda matches the loop"; echo "$out" | sed 's/^/#   /' | tail -20; }

make_bars 600
cat >"$WORK/ae.ini" <<INI
[data]
train = bars-images.gz
test_fraction = 0.2
[model]
layers = 64-32:logistic-8:linear-32:logistic-64:logistic
[optimizer]
type = kfac
[train]
iterations = 20
batch_size = 100
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
layers = 1x8x8-conv(6,3,pad=1):relu-maxpool(2)-conv(16,3):relu-flatten-32:relu-16:softmax
init = he
[optimizer]
type = kfac
[train]
iterations = 20
batch_size = 100
[log]
eval_every = 10
INI
# agree A B: the columns objective, lambda, gamma, alpha and mu of logs A and B agree to
# 1e-3 relative, row by row.
agree() {
    awk -F'\t' -v list="objective lambda gamma alpha mu" '
        BEGIN { n = split(list, names, " ") }
        FNR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
        NR == FNR { for (k = 1; k <= n; k++) v[FNR, k] = $(c[names[k]]); next }
        { for (k = 1; k <= n; k++) {
              a = v[FNR, k]; b = $(c[names[k]]); d = a - b; s = b
              if (d < 0) d = -d
              if (s < 0) s = -s
              if (d > 1e-3 * s + 1e-9) { print "row " FNR ": " names[k] " " a " against " b; bad = 1 } } }
        END { exit bad }' "$1" "$2"
}
for run in "ae:ae.ini:" "lenet:lenet.ini:" "kfoc:ae.ini:--set optimizer.curvature=kfoc"; do
    name=${run%%:*} rest=${run#*:} cfg=${rest%%:*} extra=${rest#*:}
    for dev in cpu cuda; do
        # shellcheck disable=SC2086 # extra is a list of options
        expect_status 0 "$name on $dev" -- "$KFAC" -q -j 1 --seed 5 --device $dev \
            --log "$WORK/$name-$dev.tsv" $extra "$WORK/$cfg"
    done
    if agree "$WORK/$name-cpu.tsv" "$WORK/$name-cuda.tsv" >"$WORK/diff"; then
        ok "$name: cuda and cpu agree on objective, lambda, gamma, alpha, mu"
    else
        not_ok "$name: cuda and cpu agree"; sed 's/^/#   /' "$WORK/diff" | head
    fi
done
# A checkpoint written on the GPU resumes on the CPU.
expect_status 0 "a GPU run writes a checkpoint" -- "$KFAC" -q -j 1 --seed 5 --device cuda \
    --set train.iterations=10 --set train.checkpoint_every=10 --log "$WORK/half.tsv" "$WORK/ae.ini"
expect_status 0 "and the CPU resumes it" -- "$KFAC" -q -j 1 --seed 5 --device cpu \
    --resume "$WORK/half.tsv.ckpt" --log "$WORK/half.tsv" "$WORK/ae.ini"
[ "$(tail -n 1 "$WORK/half.tsv" | cut -f1)" = 20 ] && ok "to iteration 20" || not_ok "to iteration 20"
finish
