#!/bin/sh
# data/fetch-boston.sh: extracts the UCI Boston Housing table (506 rows, 13 features and
# the target MEDV) from Debian's python3-sklearn package (apt-get download + dpkg -x; no
# Python needed) into data/boston/boston.csv, dropping sklearn's first line of counts so
# the file starts with its header. Does nothing if the file exists.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/boston/boston.csv"
if [ -f "$out" ]; then echo "fetch-boston: $out exists"; exit 0; fi
cache="$here/.cache/boston"
rm -rf "$cache" && mkdir -p "$cache" "$here/boston"
(cd "$cache" && apt-get download python3-sklearn >/dev/null && dpkg -x python3-sklearn_*.deb x)
src=$(find "$cache/x" -name boston_house_prices.csv | head -n 1)
[ -n "$src" ] || { echo "fetch-boston: boston_house_prices.csv is not in python3-sklearn" >&2; exit 1; }
tail -n +2 "$src" | tr -d '\r' >"$out.tmp" && mv "$out.tmp" "$out"
rm -rf "$cache"
echo "fetch-boston: wrote $out ($(($(wc -l <"$out") - 1)) rows)"
