#!/bin/sh
# data/fetch-fashion-mnist.sh: copies Fashion-MNIST (70,000 28x28 images, MIT licence)
# from the Debian package dataset-fashion-mnist into data/fashion-mnist/, without
# installing it (apt-get download + dpkg -x). Does nothing if the files exist.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/fashion-mnist"
files="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"
have=yes
for f in $files; do [ -f "$out/$f" ] || have=no; done
if [ $have = yes ]; then echo "fetch-fashion-mnist: $out already holds the data"; exit 0; fi
cache="$here/.cache/fashion-mnist"
rm -rf "$cache" && mkdir -p "$cache" "$out"
(cd "$cache" && apt-get download dataset-fashion-mnist >/dev/null && dpkg -x dataset-fashion-mnist_*.deb x)
for f in $files; do cp "$cache/x/usr/share/datasets/fashion-mnist/$f" "$out/$f"; done
rm -rf "$cache"
echo "fetch-fashion-mnist: wrote $out"
