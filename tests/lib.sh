# tests/lib.sh: shared set-up for the command-line tests (sourced, not run).
# Gives $KFAC (the program), $WORK (a fresh scratch directory), fixture makers and checks.
set -u
: "${top_srcdir:=.}" "${top_builddir:=.}"
KFAC="$top_builddir/kfac-train"
MKFIXTURE="$top_builddir/tests/mkfixture"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kfac-cli-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# KFAC_RUNNER (make check-valgrind) runs every kfac-train under that command.
if [ -n "${KFAC_RUNNER:-}" ]; then
    printf '#!/bin/sh\nexec %s "%s" "$@"\n' "$KFAC_RUNNER" "$(cd "$top_builddir" && pwd)/kfac-train" >"$WORK/kfac-train"
    chmod +x "$WORK/kfac-train"
    KFAC="$WORK/kfac-train"
fi
passed=0 failed=0

ok() { passed=$((passed + 1)); echo "ok - $1"; }
not_ok() { failed=$((failed + 1)); echo "not ok - $1"; }

# expect_status WANT DESCRIPTION -- COMMAND...: runs COMMAND, output in $WORK/out and $WORK/err.
expect_status() {
    want=$1 desc=$2
    shift 3
    "$@" >"$WORK/out" 2>"$WORK/err"
    got=$?
    if [ "$got" -eq "$want" ]; then ok "$desc"; else
        not_ok "$desc (exit $got, wanted $want)"; sed 's/^/#   /' "$WORK/err"; fi
}

# expect_grep FILE PATTERN DESCRIPTION
expect_grep() {
    if grep -q -e "$2" "$1"; then ok "$3"; else
        not_ok "$3 (no '$2' in $1)"; sed 's/^/#   /' "$1" | head -20; fi
}

# column_values FILE NAME: the values of the log column NAME that are not nan, one a line.
column_values() {
    awk -F'\t' -v name="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == name) c = i; next }
                             c && $c != "nan" { print $c }' "$1"
}

# An 8x8 bars data set: $WORK/bars-images.gz, $WORK/bars-labels.gz.
make_bars() { "$MKFIXTURE" bars "$WORK/bars-images.gz" "$WORK/bars-labels.gz" "${1:-600}" 1; }

finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}
