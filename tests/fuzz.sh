#!/bin/sh
# tests/fuzz.sh: replays each fuzz target's seed corpus and every input that once made it
# crash (tests/fuzz/corpus/TARGET, tests/fuzz/crashes/TARGET) through the same target code
# built without libFuzzer, so that a fixed bug stays fixed (under the sanitizers when the
# build has them). tests/fuzz/run.sh does the fuzzing itself.
. "$top_srcdir/tests/lib.sh"
for t in idx npy csv mat ini checkpoint checkpoint_fields; do
    files=$(find "$top_srcdir/tests/fuzz/corpus/$t" "$top_srcdir/tests/fuzz/crashes/$t" -type f 2>/dev/null | sort)
    n=$(printf '%s\n' "$files" | grep -c . || true)
    if [ "$n" -eq 0 ]; then not_ok "$t: no inputs to replay"; continue; fi
    # shellcheck disable=SC2086 # one argument per file; the names have no spaces
    if "$top_builddir/tests/fuzz/replay_$t" $files >"$WORK/out" 2>"$WORK/err"; then
        ok "$t: $n inputs replay without a crash"
    else
        not_ok "$t: replaying its $n inputs"; sed 's/^/#   /' "$WORK/err" | head -20
    fi
done
finish
