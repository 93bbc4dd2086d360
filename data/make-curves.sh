#!/bin/sh
# data/make-curves.sh: writes the CURVES set of the deep-autoencoder benchmark (20,000
# training and 10,000 test 28x28 images of smooth curves, seed 1) into data/curves/
# with kfac-datagen (build it first: ./bootstrap or make). Does nothing if the files
# exist. The generator is described in data/README.md and kfac-datagen(1).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/curves"
gen="$here/../tools/kfac-datagen"
if [ -f "$out/curves-train-images-idx3-ubyte.gz" ] && [ -f "$out/curves-test-images-idx3-ubyte.gz" ]; then
    echo "make-curves: $out already holds the data"; exit 0
fi
[ -x "$gen" ] || { echo "make-curves: build kfac-datagen first (./bootstrap or make)" >&2; exit 2; }
"$gen" curves --force --seed 1 --train 20000 --test 10000 "$out"
