#!/bin/sh
# data/fetch-faces.sh: writes the FACES stand-in (10,000 training and 2,500 test 25x25
# faces, seed 1) into data/faces/. It is NOT the original benchmark set (165,600
# transformed Olivetti faces, which no package ships): kfac-datagen makes random
# rotations, magnifications and shifts of the 100 faces of Labeled Faces in the Wild
# that Debian's python3-skimage package ships as skimage/data/lfw_subset.npy (taken with
# apt-get download + dpkg -x; nothing is installed, no Python is run). Faces 1-80 make
# the training images, faces 81-100 the test images. Does nothing if the files exist.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/faces"
gen="$here/../tools/kfac-datagen"
if [ -f "$out/faces-train-images-idx3-ubyte.gz" ] && [ -f "$out/faces-test-images-idx3-ubyte.gz" ]; then
    echo "fetch-faces: $out already holds the data"; exit 0
fi
[ -x "$gen" ] || { echo "fetch-faces: build kfac-datagen first (./bootstrap or make)" >&2; exit 2; }
cache="$here/.cache/faces"
rm -rf "$cache" && mkdir -p "$cache"
(cd "$cache" && apt-get download python3-skimage >/dev/null && dpkg -x python3-skimage_*.deb x)
# lfw_subset.npy holds 200 images: the first 100 are faces, the rest are not.
"$gen" faces --force --seed 1 --sources 100 --train 10000 --test 2500 \
    "$cache/x/usr/lib/python3/dist-packages/skimage/data/lfw_subset.npy" "$out"
rm -rf "$cache"
