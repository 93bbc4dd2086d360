#!/bin/sh
# tests/configs.sh: every shipped configuration parses, validates and builds its model
# (a dry run reads no data, so this needs no download), and one whose data are missing
# says which file and where data come from.
. "$top_srcdir/tests/lib.sh"
for cfg in "$top_srcdir"/configs/*.ini; do
    expect_status 0 "$(basename "$cfg") passes a dry run" -- "$KFAC" --dry-run "$cfg"
done
expect_status 0 "the SGD autoencoder dry run" -- "$KFAC" --dry-run "$top_srcdir/configs/mnist-autoencoder-sgd.ini"
expect_grep "$WORK/out" "2837314 parameters" "the MNIST autoencoder has the paper's 2,837,314 parameters"
expect_status 0 "the CURVES autoencoder dry run" -- "$KFAC" --dry-run "$top_srcdir/configs/curves-autoencoder.ini"
expect_grep "$WORK/out" "842340 parameters" "the CURVES autoencoder has the paper's 842,340 parameters"
if [ ! -e "$top_srcdir/data/curves/curves-train-images-idx3-ubyte.gz" ]; then
    expect_status 2 "the CURVES autoencoder without its data stops" -- "$KFAC" -q "$top_srcdir/configs/curves-autoencoder.ini"
    expect_grep "$WORK/err" "curves-train-images-idx3-ubyte.gz: cannot open: No such file.*data/README.md" \
        "the message names the missing file and where data comes from"
fi
expect_status 0 "the FACES autoencoder dry run" -- "$KFAC" --dry-run "$top_srcdir/configs/faces-autoencoder.ini"
expect_grep "$WORK/out" "7537655 parameters" "the FACES autoencoder has the paper's 7,537,655 parameters"
expect_status 0 "the LeNet-5 dry run" -- "$KFAC" --dry-run "$top_srcdir/configs/lenet5-mnist.ini"
expect_grep "$WORK/out" "61706 parameters" "LeNet-5 has its 61,706 parameters"
expect_grep "$WORK/out" "layer 4: maxpool 16x10x10 -> 16x5x5" "and its shapes"
expect_status 0 "the K-FAC MNIST autoencoder dry run" -- "$KFAC" --dry-run "$top_srcdir/configs/mnist-autoencoder.ini"
expect_grep "$WORK/out" "type = kfac" "it selects K-FAC"
expect_grep "$WORK/out" "batch_schedule = exponential" "with the exponential batch schedule"
finish
