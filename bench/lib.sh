# bench/lib.sh: what the benchmark scripts share, sourced after `set -eu` with the
# script's name in $name and its arguments in "$@": $top (the project root), $kfac (the
# built kfac-train, or exit 2), $report_only (1 after a leading -r, which is shifted off
# with `shift $shift_r`), and errors LOG, which prints iteration, seconds and training
# error of the rows of a log where the error was measured.
top=$(cd "$(dirname "$0")/.." && pwd)
report_only=0 shift_r=0
if [ "${1:-}" = -r ]; then
    report_only=1 shift_r=1
fi
kfac=$top/kfac-train
[ -x "$kfac" ] || { echo "$name: build kfac-train first (./bootstrap or make)" >&2; exit 2; }

errors() {
    awk -F'\t' 'NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "seconds") s = i; if ($i == "train_recon") e = i } next }
                $e != "nan" { print $1 "\t" $s "\t" $e }' "$1"
}
