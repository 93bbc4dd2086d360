#!/bin/sh
# tests/manpage.sh: the manual pages format without warnings, kfac-train.ini(5)
# documents every configuration key, and its example configuration runs as printed (on
# fixture data in place of MNIST).
. "$top_srcdir/tests/lib.sh"
for page in "$top_srcdir/man/kfac-train.1" "$top_srcdir/man/kfac-train.ini.5" "$top_srcdir/man/kfac-datagen.1"; do
    if [ -z "${GROFF:-}" ]; then
        echo "# groff not found: not checking $page"
    elif "$GROFF" -man -ww -z "$page" 2>"$WORK/warn" && [ ! -s "$WORK/warn" ]; then
        ok "$(basename "$page") formats without warnings"
    else
        not_ok "$(basename "$page") formats without warnings"; sed 's/^/#   /' "$WORK/warn"
    fi
done
# Every configuration key is documented.
"$KFAC" --dry-run "$top_srcdir/configs/quickstart.ini" 2>/dev/null | sed -n 's/^\([a-z_0-9]*\) = .*/\1/p' >"$WORK/keys"
[ -s "$WORK/keys" ] && ok "the keys are listed" || not_ok "the keys are listed"
missing=
while read -r key; do
    grep -Eq "^\.BR ($key |.*\" $key \")" "$top_srcdir/man/kfac-train.ini.5" || missing="$missing $key"
done <"$WORK/keys"
[ -z "$missing" ] && ok "kfac-train.ini(5) documents every key" || not_ok "kfac-train.ini(5) lacks:$missing"
# The example sits between .EX and .EE after '.SH EXAMPLE'.
sed -n '/^\.SH EXAMPLE$/,/^\.SH SEE ALSO/p' "$top_srcdir/man/kfac-train.ini.5" |
    sed -n '/^\.EX$/,/^\.EE$/p' | sed '1d;$d' >"$WORK/example.ini"
grep -q '^layers = 784-' "$WORK/example.ini" && ok "the example is extracted" || not_ok "the example is extracted"
# 28x28 fixture images stand in for MNIST: the bars fixture is 8x8, so make 784-pixel data.
awk 'BEGIN { srand(4); printf "p0"; for (j = 1; j < 784; j++) printf ",p%d", j; print "";
             for (i = 0; i < 300; i++) { r = int(rand() * 28);
               for (j = 0; j < 784; j++) printf "%s%s", (j ? "," : ""), (int(j / 28) == r ? 1 : 0); print "" } }' \
    >"$WORK/digits.csv"
expect_status 0 "the manual's example configuration trains" -- "$KFAC" -q \
    --set data.train="$WORK/digits.csv" --log "$WORK/example.tsv" "$WORK/example.ini"
[ "$(wc -l <"$WORK/example.tsv")" -eq 51 ] && ok "it runs its 50 iterations" || not_ok "it runs its 50 iterations"
finish
