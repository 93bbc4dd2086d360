#!/bin/sh
# tests/cli.sh: the kfac-train command as a user meets it: help, version, usage errors,
# dry runs, configuration and data errors with their exit status, short SGD and K-FAC
# runs whose error drops, and the log's protection against overwriting.
. "$top_srcdir/tests/lib.sh"
make_bars 600

cat >"$WORK/ae.ini" <<INI
[data]
train = bars-images.gz
test_fraction = 0.2
[model]
layers = 64-16:logistic-64:logistic
[optimizer]
learning_rate = 0.2
momentum = 0.9
[train]
iterations = 200
batch_size = 50
[log]
eval_every = 50
INI

expect_status 0 "--help exits 0" -- "$KFAC" --help
expect_grep "$WORK/out" "^Usage: kfac-train" "--help prints usage on stdout"
expect_status 0 "--version exits 0" -- "$KFAC" --version
expect_grep "$WORK/out" "^kfac-train [0-9]" "--version prints the version"
expect_grep "$WORK/out" "^backends: cpu" "and the backends built"
cp "$WORK/out" "$WORK/version"
expect_grep "$WORK/version" "^blas: OpenBLAS [0-9]" "and the BLAS library with its build"
# OpenBLAS's idle threads: where it runs several and the environment leaves their wait at
# its default, kfac-train starts again with a short one (not under valgrind: KFAC_RUNNER);
# a value the user set is kept; one thread leaves the environment alone.
if [ -z "${KFAC_RUNNER:-}" ] && [ -r /proc/self/exe ]; then
    env -u OPENBLAS_THREAD_TIMEOUT -u GOTO_THREAD_TIMEOUT OPENBLAS_NUM_THREADS=2 "$KFAC" \
        --version >"$WORK/out"
    if grep -q '^blas threads: 1,' "$WORK/out"; then
        expect_grep "$WORK/out" "^blas threads: 1, OPENBLAS_THREAD_TIMEOUT=(unset)$" \
            "one core: OpenBLAS's wait left as it is"
    else
        expect_grep "$WORK/out" "^blas threads: 2, OPENBLAS_THREAD_TIMEOUT=16$" \
            "OpenBLAS's idle threads get a short wait"
    fi
    env -u GOTO_THREAD_TIMEOUT OPENBLAS_THREAD_TIMEOUT=28 OPENBLAS_NUM_THREADS=2 "$KFAC" \
        --version >"$WORK/out"
    expect_grep "$WORK/out" "^blas threads: [12], OPENBLAS_THREAD_TIMEOUT=28$" \
        "the user's OPENBLAS_THREAD_TIMEOUT is kept"
    env -u OPENBLAS_THREAD_TIMEOUT GOTO_THREAD_TIMEOUT=20 OPENBLAS_NUM_THREADS=2 "$KFAC" \
        --version >"$WORK/out"
    expect_grep "$WORK/out" "OPENBLAS_THREAD_TIMEOUT=(unset)$" "and so is its older GOTO_ name"
    env -u OPENBLAS_THREAD_TIMEOUT -u GOTO_THREAD_TIMEOUT OPENBLAS_NUM_THREADS=1 "$KFAC" \
        --version >"$WORK/out"
    expect_grep "$WORK/out" "^blas threads: 1, OPENBLAS_THREAD_TIMEOUT=(unset)$" \
        "one thread: nothing changed"
fi
# OpenBLAS's SSE-only kernels on a CPU with AVX2 and FMA (forced here through the variable
# that chooses them, as a CPU OpenBLAS does not know chooses them itself): a warning that
# names the variable to set, unless --quiet; none with the kernels the CPU deserves.
if grep -qw avx2 /proc/cpuinfo 2>/dev/null && grep -qw fma /proc/cpuinfo &&
   OPENBLAS_CORETYPE=Prescott "$KFAC" --version | grep -q '^blas: .* Prescott '; then
    OPENBLAS_CORETYPE=Prescott "$KFAC" -n "$WORK/ae.ini" >/dev/null 2>"$WORK/err"
    warning="^kfac-train: warning: OpenBLAS runs its Prescott kernels (SSE only)"
    expect_grep "$WORK/err" "$warning.*set OPENBLAS_CORETYPE=\(Haswell\|SkylakeX\) in" \
        "OpenBLAS's SSE kernels on an AVX2 CPU are named, with the fix"
    OPENBLAS_CORETYPE=Prescott "$KFAC" -q -n "$WORK/ae.ini" >/dev/null 2>"$WORK/err"
    [ ! -s "$WORK/err" ] && ok "not with --quiet" || not_ok "not with --quiet"
    OPENBLAS_CORETYPE=Haswell "$KFAC" -n "$WORK/ae.ini" >/dev/null 2>"$WORK/err"
    ! grep -q warning "$WORK/err" && ok "nor with AVX2 kernels" || not_ok "nor with AVX2 kernels"
else
    echo "# no AVX2 and FMA, or an OpenBLAS that keeps its kernels: no kernel warning to check"
fi
expect_status 2 "no configuration is a usage error" -- "$KFAC"
expect_grep "$WORK/err" "missing CONFIG.ini" "the missing argument is named"
expect_status 2 "an unknown option is a usage error" -- "$KFAC" --frobnicate "$WORK/ae.ini"
expect_grep "$WORK/err" "Try 'kfac-train --help'" "a bad option points at --help"

expect_status 0 "--dry-run succeeds" -- "$KFAC" --dry-run "$WORK/ae.ini"
expect_grep "$WORK/out" "^layers = 64-16:logistic-64:logistic" "dry run prints the resolved config"
expect_grep "$WORK/out" "^learning_rate = 0.2" "dry run prints set values"
expect_grep "$WORK/out" "^momentum_schedule = fixed" "dry run prints defaults"
expect_grep "$WORK/out" "2128 parameters" "dry run counts the parameters (16*65 + 64*17)"
expect_grep "$WORK/out" "loss bernoulli" "dry run names the matched loss"
expect_status 0 "--set overrides a key" -- "$KFAC" -n --set model.layers=64-8:tanh-64:logistic "$WORK/ae.ini"
expect_grep "$WORK/out" "^layers = 64-8:tanh-64:logistic" "the override is in force"

printf '[data]\ntrain = x\n[model]\nlayers = 64-16:logistic-64:logistic\nlearning_rate = 1\n' >"$WORK/bad.ini"
expect_status 2 "an unknown key is a configuration error" -- "$KFAC" "$WORK/bad.ini"
expect_grep "$WORK/err" "bad.ini:5: unknown key model.learning_rate" "the error names file, line and key"
# What is not a configuration file is refused before it is read.
expect_status 2 "a device as the configuration is refused, not read for ever" -- "$KFAC" -n /dev/zero
expect_grep "$WORK/err" "/dev/zero: a device, not a configuration file" "saying what it is"
mkdir "$WORK/dir.ini"
expect_status 2 "a directory as the configuration is refused" -- "$KFAC" -n "$WORK/dir.ini"
expect_grep "$WORK/err" "dir.ini: a directory, not a configuration file" "saying it is a directory"
mkfifo "$WORK/fifo.ini"
expect_status 2 "a pipe as the configuration is refused, not waited on" -- "$KFAC" -n "$WORK/fifo.ini"
expect_grep "$WORK/err" "fifo.ini: a pipe, not a configuration file" "saying it is a pipe"
head -c 1100000 /dev/zero | tr '\0' '#' >"$WORK/huge.ini"
expect_status 2 "a configuration over 1 MiB is refused" -- "$KFAC" -n "$WORK/huge.ini"
expect_grep "$WORK/err" "huge.ini: 1100000 bytes is not a configuration" "with its size"
printf '[data]\ntrain = bars-images.gz\000junk\n' >"$WORK/nul.ini"
expect_status 2 "text after a NUL byte is not ignored" -- "$KFAC" -n "$WORK/nul.ini"
expect_grep "$WORK/err" "nul.ini:2: a NUL byte in the line" "naming the line"
expect_status 2 "a bad --set value is an error" -- "$KFAC" -n --set train.iterations=many "$WORK/ae.ini"
expect_grep "$WORK/err" "train.iterations = 'many': expected an integer" "the bad value is named"
expect_status 2 "a missing data file is a data error" -- "$KFAC" --set data.train="$WORK/none.gz" "$WORK/ae.ini"
expect_grep "$WORK/err" "none.gz: cannot open" "the missing file is named"
expect_status 2 "model and data widths must agree" -- "$KFAC" --set model.layers=10-4:logistic-10:logistic "$WORK/ae.ini"
expect_grep "$WORK/err" "takes 10 inputs" "the mismatch is explained"
# 1 x 15182 x 848696 wraps to 784 in 32 bits: it passed the input check and crashed.
expect_status 2 "a shape too large for 32 bits is refused" -- "$KFAC" -n \
    --set 'model.layers=1x15182x848696-maxpool(1)-flatten-32:logistic-784:logistic' "$WORK/ae.ini"
expect_grep "$WORK/err" "layer 1: an input of 12884902672 values per case is more than" \
    "the oversized input is named with its true size"
expect_status 2 "an output map too large is refused" -- "$KFAC" -n \
    --set 'model.layers=1x10000x10000-conv(3,3,pad=1):relu-flatten-10:linear' "$WORK/ae.ini"
expect_grep "$WORK/err" "layer 1: an output map of 300000000 values" "the output map is named"
# Runs that cannot fit are refused before they allocate, with the bytes and the key.
expect_status 2 "parameters beyond any machine's memory are refused" -- "$KFAC" -q --log "$WORK/big.tsv" \
    --set 'model.layers=64-1000000:logistic-1000000:logistic-64:logistic' "$WORK/ae.ini"
expect_grep "$WORK/err" "model.layers: the run needs at least 7.3 TiB, more than the .* this machine lets the process use: parameters and gradients 7.3 TiB (model.layers)" \
    "naming the bytes and the key"
expect_status 2 "K-FAC factors beyond any machine's memory are refused" -- "$KFAC" -q --log "$WORK/big.tsv" \
    --set optimizer.type=kfac --set 'model.layers=64-200000:logistic-64:logistic' "$WORK/ae.ini"
expect_grep "$WORK/err" "needs at least 4.5 TiB, .*: K-FAC's factors and vectors 4.5 TiB (model.layers)" \
    "naming the factors"
expect_status 2 "a run over train.memory_limit is refused" -- "$KFAC" -q --log "$WORK/big.tsv" \
    --set train.memory_limit=1M --set train.batch_size=480 --set train.chunk_size=480 "$WORK/ae.ini"
expect_grep "$WORK/err" "more than train.memory_limit (1.0 MiB): layer buffers for 480 cases 997.5 KiB (train.chunk_size)" \
    "naming the limit and the largest item"
expect_status 2 "a limit too small for one case is refused" -- "$KFAC" -q --log "$WORK/big.tsv" \
    --set train.memory_limit=100K "$WORK/ae.ini"
expect_grep "$WORK/err" "the run needs at least 197.8 KiB, more than train.memory_limit (100.0 KiB): .*layer buffers for 1 case 2.1 KiB (train.chunk_size)" \
    "saying how much is needed"
[ -e "$WORK/big.tsv" ] && not_ok "no log is left by the refusals" || ok "no log is left by the refusals"
# 10,000,000 cases of buffers for 480 cases to evaluate: now as many as there are.
expect_status 0 "log.eval_batch beyond the data set is clamped to it" -- "$KFAC" -q --log "$WORK/eval.tsv" \
    --set log.eval_batch=10000000 --set train.memory_limit=64M --set train.iterations=3 "$WORK/ae.ini"
# The device: an unknown name is refused by the dry run; cuda, in a build without it or
# with no such GPU, by the run, naming what is missing.
expect_status 2 "an unknown device is refused" -- "$KFAC" -n --device gpu "$WORK/ae.ini"
expect_grep "$WORK/err" "train.device = 'gpu': expected cpu, cuda or cuda:N" "naming the key"
if grep -q '^backends: .*cuda' "$WORK/version"; then
    expect_status 2 "a GPU that is not there is refused" -- "$KFAC" -q --device cuda:99 \
        --log "$WORK/dev.tsv" "$WORK/ae.ini"
    expect_grep "$WORK/err" "train.device = cuda:99: \(there is no CUDA device 99\|no CUDA device is visible\)" \
        "naming the device"
else
    expect_status 2 "cuda in a build without it is refused" -- "$KFAC" -q --device cuda \
        --log "$WORK/dev.tsv" "$WORK/ae.ini"
    expect_grep "$WORK/err" "train.device = cuda: this kfac-train was built without CUDA (configure it with --enable-cuda)" \
        "saying how to get it"
fi
[ -e "$WORK/dev.tsv" ] && not_ok "no log is left by a refused device" || ok "no log is left by a refused device"
# Under train.chunk_size = auto a limit below the whole batch's needs takes chunks.
expect_status 0 "the dry run plans the memory" -- "$KFAC" -n "$WORK/ae.ini"
expect_grep "$WORK/out" "^# memory: 480 cases per pass (train.chunk_size = auto)" "with the chunk it chose"
expect_grep "$WORK/out" "^#   the data  *150.0 KiB  (data.max_cases)" "and the data"
expect_status 0 "a tighter limit" -- "$KFAC" -n --set train.memory_limit=1M --set train.batch_size=480 "$WORK/ae.ini"
expect_grep "$WORK/out" "^# memory: 322 cases per pass (train.chunk_size = auto)" "takes chunks that fit in 95% of it"
expect_grep "$WORK/out" "^#   total, at least  *972.4 KiB  of train.memory_limit (1.0 MiB)" "within it"
expect_status 0 "and trains in them" -- "$KFAC" -q --log "$WORK/chunked.tsv" --set train.memory_limit=1M \
    --set train.batch_size=480 --set train.iterations=3 "$WORK/ae.ini"
expect_status 0 "an explicit chunk" -- "$KFAC" -n --set train.chunk_size=100 "$WORK/ae.ini"
expect_grep "$WORK/out" "^# memory: 100 cases per pass (train.chunk_size = 100)" "is taken"
expect_grep "$WORK/out" "^chunk_size = 100" "and printed back"
expect_status 2 "a chunk that is not a number is refused" -- "$KFAC" -n --set train.chunk_size=big "$WORK/ae.ini"
expect_grep "$WORK/err" "train.chunk_size = 'big': expected auto or an integer from 0 to 10000000" "naming the key"
expect_status 0 "K-FOC's statistics are kept beside smaller chunks" -- "$KFAC" -n --set optimizer.type=kfac \
    --set optimizer.curvature=kfoc --set optimizer.stats_fraction=1 --set train.chunk_size=20 "$WORK/ae.ini"
expect_grep "$WORK/out" "^# memory: 20 cases per pass (train.chunk_size = 20)" "in the chunk asked for"
expect_status 0 "and so are the Fisher-error probe's" -- "$KFAC" -n --set log.fisher_error_every=5 \
    --set log.fisher_error_cases=30 --set train.chunk_size=20 "$WORK/ae.ini"
expect_grep "$WORK/out" "^#   the Fisher-error probe .*(log.fisher_error_cases)" "which the plan counts"
expect_status 2 "an export of the probe in chunks is refused" -- "$KFAC" -n --set log.fisher_error_every=5 \
    --set log.fisher_error_cases=30 --set log.fisher_export="$WORK/fx" --set train.chunk_size=20 "$WORK/ae.ini"
expect_grep "$WORK/err" "train.chunk_size = 20: log.fisher_export of the probe (log.fisher_error_cases) needs all its 30 cases in one chunk" \
    "saying why"
expect_status 0 "train.memory_limit takes K, M, G and T" -- "$KFAC" -n --set train.memory_limit=1.5G "$WORK/ae.ini"
expect_grep "$WORK/out" "^memory_limit = 1536M" "and prints the size back in the largest whole unit"
expect_status 2 "a memory limit that is not a size is refused" -- "$KFAC" -n --set train.memory_limit=2Q "$WORK/ae.ini"
expect_grep "$WORK/err" "train.memory_limit = '2Q': expected a size in bytes" "naming the key"

expect_status 0 "a short training run succeeds" -- "$KFAC" --seed 3 --log "$WORK/run.tsv" "$WORK/ae.ini"
expect_grep "$WORK/err" "200 iterations in" "the summary line is printed"
first=$(column_values "$WORK/run.tsv" train_recon | head -n 1)
last=$(column_values "$WORK/run.tsv" train_recon | tail -n 1)
if awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < 0.7 * a) }'; then
    ok "the reconstruction error drops ($first -> $last)"
else not_ok "the reconstruction error drops ($first -> $last)"; fi
rows=$(wc -l <"$WORK/run.tsv")
[ "$rows" -eq 201 ] && ok "one log row per iteration" || not_ok "one log row per iteration ($rows lines)"

cp "$WORK/run.tsv" "$WORK/run.keep"
expect_status 2 "an existing log is not overwritten" -- "$KFAC" --log "$WORK/run.tsv" "$WORK/ae.ini"
expect_grep "$WORK/err" "use --force" "the refusal says how to proceed"
cmp -s "$WORK/run.tsv" "$WORK/run.keep" && ok "the old log is intact" || not_ok "the old log is intact"
expect_status 0 "--force replaces the log" -- "$KFAC" -q -f --log "$WORK/run.tsv" --set train.iterations=5 "$WORK/ae.ini"
[ "$(wc -l <"$WORK/run.tsv")" -eq 6 ] && ok "the forced log is new" || not_ok "the forced log is new"
[ ! -s "$WORK/err" ] && ok "--quiet prints nothing on stderr" || not_ok "--quiet prints nothing on stderr"

# K-FAC from the command line: its log columns, the exponential batch schedule, and the
# γ choice by the mini-batch objective.
expect_status 0 "a K-FAC run succeeds" -- "$KFAC" -q --log "$WORK/kfac.tsv" --set optimizer.type=kfac \
    --set optimizer.lambda=1 --set train.batch_schedule=exponential --set train.batch_full_at=40 \
    --set train.batch_size=50 --set train.iterations=60 --set log.eval_every=20 "$WORK/ae.ini"
for col in lambda gamma rho alpha mu model_change step_norm t_stats t_inverse t_precond t_model; do
    head -n 1 "$WORK/kfac.tsv" | tr '\t' '\n' | grep -qx "$col" && ok "the K-FAC log has $col" \
        || not_ok "the K-FAC log has $col"
done
batches=$(column_values "$WORK/kfac.tsv" batch | sed -n '1p;2p;40p;60p' | tr '\n' ' ')
[ "$batches" = "50 52 480 480 " ] && ok "the batch grows from 50 (then 52 = ⌊50·9.6^(1/39)⌋) to the 480 training cases at k = 40" \
    || not_ok "the exponential schedule gave batches '$batches'"
first=$(column_values "$WORK/kfac.tsv" train_recon | head -n 1)
last=$(column_values "$WORK/kfac.tsv" train_recon | tail -n 1)
if awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < 0.75 * a) }'; then
    ok "K-FAC lowers the reconstruction error ($first -> $last)"
else not_ok "K-FAC lowers the reconstruction error ($first -> $last)"; fi
# The warm-up start: rho at every iteration until the first rho <= 3/4 (or iteration 20),
# then at every 5th only.
bad_rho=$(awk -F'\t' 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "rho") r = i; next }
    { have = $r != "nan"; want = warm || $1 % 5 == 0
      if (have != want) print $1
      if (warm && (!have || $r + 0 <= 0.75 || $1 >= 20)) { warm = 0; ended = $1 } }
    BEGIN { warm = 1 } END { if (!ended) print "no end" }' "$WORK/kfac.tsv")
[ -z "$bad_rho" ] && ok "rho is reported through the warm-up, then every 5 iterations" ||
    not_ok "rho is reported through the warm-up, then every 5 iterations (wrong at: $bad_rho)"
expect_status 0 "the paper's start" -- "$KFAC" -q --log "$WORK/paper.tsv" --set optimizer.type=kfac \
    --set optimizer.start=paper --set train.batch_size=50 --set train.iterations=12 "$WORK/ae.ini"
[ "$(awk -F'\t' 'NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "rho") r = i; if ($i == "gamma") g = i } next }
     $r != "nan" { printf "%s ", $1 } END { printf "%s", $g }' "$WORK/paper.tsv")" = "5 10 12.24745" ] &&
    ok "reports rho every 5 iterations from the first, gamma from sqrt(150)" ||
    not_ok "reports rho every 5 iterations from the first, gamma from sqrt(150)"
# optimizer.preset = kfac3 over a file that differs from KFAC3 in three keys runs the
# paper's start above, number for number (the clocks aside).
sed 's/^\[optimizer\]$/&\ntype = kfac\nstart = warmup\nmodel_fraction = 0.25\ngamma_max = 5/' \
    "$WORK/ae.ini" >"$WORK/not-kfac3.ini"
expect_status 0 "the kfac3 preset" -- "$KFAC" -q --log "$WORK/preset.tsv" \
    --set optimizer.preset=kfac3 --set train.batch_size=50 --set train.iterations=12 \
    "$WORK/not-kfac3.ini"
no_clocks() {
    awk -F'\t' 'NR == 1 { for (i = 1; i <= NF; i++) keep[i] = $i != "seconds" && $i !~ /^t_/ }
                 { s = ""; for (i = 1; i <= NF; i++) if (keep[i]) s = s $i "\t"; print s }' "$1"
}
[ -s "$WORK/preset.tsv" ] &&
    [ "$(no_clocks "$WORK/preset.tsv")" = "$(no_clocks "$WORK/paper.tsv")" ] &&
    ok "it runs KFAC3's constants: the same log as the paper's start" ||
    not_ok "it runs KFAC3's constants: the same log as the paper's start"
expect_status 2 "the preset on SGD is refused" -- "$KFAC" -n --set optimizer.type=sgd \
    --set optimizer.preset=kfac3 "$WORK/ae.ini"
expect_grep "$WORK/err" "optimizer.preset = kfac3 sets K-FAC's constants" "and says why"
# K-FAC with K-FOC factors.
expect_status 0 "a K-FOC run succeeds" -- "$KFAC" -q --log "$WORK/kfoc.tsv" --set optimizer.type=kfac \
    --set optimizer.curvature=kfoc --set optimizer.lambda=1 --set train.batch_size=50 \
    --set train.iterations=60 --set log.eval_every=20 "$WORK/ae.ini"
iters=$(column_values "$WORK/kfoc.tsv" kfoc_iterations | sort -n | sed -n '1p;$p' | tr '\n' ' ')
awk -v r="$iters" 'BEGIN { split(r, a, " "); exit !(a[1] >= 1 && a[2] <= 100) }' \
    && ok "kfoc_iterations is logged within [1, 100] ($iters)" || not_ok "kfoc_iterations: '$iters'"
first=$(column_values "$WORK/kfoc.tsv" train_recon | head -n 1)
last=$(column_values "$WORK/kfoc.tsv" train_recon | tail -n 1)
if awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < 0.7 * a) }'; then
    ok "K-FOC lowers the reconstruction error ($first -> $last)"
else not_ok "K-FOC lowers the reconstruction error ($first -> $last)"; fi
# Block-tridiagonal K-FAC, from the paper's start so that the first evaluation comes before
# most of the descent.
expect_status 0 "a block-tridiagonal K-FAC run succeeds" -- "$KFAC" -q --log "$WORK/tri.tsv" \
    --set optimizer.type=kfac --set optimizer.curvature=kfac-tridiag --set optimizer.lambda=1 \
    --set optimizer.start=paper \
    --set train.batch_size=50 --set train.iterations=60 --set log.eval_every=20 "$WORK/ae.ini"
first=$(column_values "$WORK/tri.tsv" train_recon | head -n 1)
last=$(column_values "$WORK/tri.tsv" train_recon | tail -n 1)
if awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < 0.7 * a) }'; then
    ok "block-tridiagonal K-FAC lowers the reconstruction error ($first -> $last)"
else not_ok "block-tridiagonal K-FAC lowers the reconstruction error ($first -> $last)"; fi
expect_status 2 "a bad curvature is refused" -- "$KFAC" -n --set optimizer.curvature=kfc "$WORK/ae.ini"
expect_grep "$WORK/err" "optimizer.curvature = 'kfc': expected one of block-diagonal, kfoc, kfac-tridiag" \
    "the refusal lists the choices"
expect_status 2 "Cholesky inverses are refused for kfac-tridiag" -- "$KFAC" -q --set optimizer.type=kfac \
    --set optimizer.curvature=kfac-tridiag --set optimizer.inverse=cholesky \
    --set train.iterations=1 "$WORK/ae.ini"
expect_grep "$WORK/err" "optimizer.inverse = cholesky: optimizer.curvature = kfac-tridiag needs" \
    "the refusal names both keys"
expect_status 2 "a bad inverse method is refused" -- "$KFAC" -n --set optimizer.inverse=qr "$WORK/ae.ini"
expect_grep "$WORK/err" "optimizer.inverse = 'qr': expected one of auto, cholesky, eigen" \
    "the refusal lists the methods"
# Float Cholesky inversions: the same descent as the double ones, to rounding.
for p in double float; do
    expect_status 0 "a K-FAC run with $p inversions succeeds" -- "$KFAC" -q \
        --log "$WORK/inv-$p.tsv" --set optimizer.type=kfac --set optimizer.inverse_precision=$p \
        --set train.iterations=40 --set log.eval_every=20 "$WORK/ae.ini"
done
a=$(column_values "$WORK/inv-double.tsv" train_recon | tail -n 1)
b=$(column_values "$WORK/inv-float.tsv" train_recon | tail -n 1)
if awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; exit !((d < 0 ? -d : d) < 0.01 * a) }'; then
    ok "float inversions end within 1% of double ones ($a, $b)"
else not_ok "float inversions end within 1% of double ones ($a, $b)"; fi
column_values "$WORK/inv-double.tsv" alpha >"$WORK/alpha-double"
column_values "$WORK/inv-float.tsv" alpha >"$WORK/alpha-float"
if cmp -s "$WORK/alpha-double" "$WORK/alpha-float"; then
    not_ok "float inversions take steps of their own (alpha)"
else ok "float inversions take steps of their own (alpha)"; fi
expect_status 2 "float inversions are refused with eigendecompositions" -- "$KFAC" -q \
    --set optimizer.type=kfac --set optimizer.inverse=eigen \
    --set optimizer.inverse_precision=float --set train.iterations=1 "$WORK/ae.ini"
expect_grep "$WORK/err" \
    "inverses here come from eigendecompositions (optimizer.inverse = eigen)" \
    "the refusal names both keys"
expect_status 2 "float inversions are refused for kfac-tridiag" -- "$KFAC" -q \
    --set optimizer.type=kfac --set optimizer.curvature=kfac-tridiag \
    --set optimizer.inverse_precision=float --set train.iterations=1 "$WORK/ae.ini"
expect_grep "$WORK/err" "(optimizer.inverse = auto with optimizer.curvature = kfac-tridiag)" \
    "the refusal names the curvature"
expect_status 2 "a bad inverse precision is refused" -- "$KFAC" -n \
    --set optimizer.inverse_precision=half "$WORK/ae.ini"
expect_grep "$WORK/err" "optimizer.inverse_precision = 'half': expected one of double, float" \
    "the refusal lists the precisions"
# Fisher-approximation errors beside the loss.
expect_status 0 "Fisher errors are logged" -- "$KFAC" -q -f --log "$WORK/fe.tsv" --set log.fisher_error_every=10 \
    --set log.fisher_error_cases=40 --set train.iterations=30 "$WORK/ae.ini"
for col in fisher_diag_1 fisher_kfac_1 fisher_kfoc_1 fisher_diag_2 fisher_kfac_2 fisher_kfoc_2; do
    [ "$(column_values "$WORK/fe.tsv" "$col" | wc -l)" -eq 3 ] && ok "$col is measured every 10 iterations" \
        || not_ok "$col is measured every 10 iterations"
done
for layer in 1 2; do
    if paste "$(column_values "$WORK/fe.tsv" fisher_kfoc_$layer >"$WORK/kfoc"; echo "$WORK/kfoc")" \
        "$(column_values "$WORK/fe.tsv" fisher_kfac_$layer >"$WORK/kfac"; echo "$WORK/kfac")" |
        awk '{ if (!($1 > 0 && $1 <= $2 + 1e-4 && $2 < 1)) bad = 1 } END { exit bad }'; then
        ok "layer $layer: K-FOC's error is within (0, K-FAC's]"
    else not_ok "layer $layer: K-FOC's error is within (0, K-FAC's]"; fi
done
"$KFAC" -q -f --log "$WORK/nofe.tsv" --set train.iterations=30 "$WORK/ae.ini"
cut -f1-4 "$WORK/fe.tsv" | sed 1d >"$WORK/fe.cols"
cut -f1-4 "$WORK/nofe.tsv" | sed 1d | awk -F'\t' '{ $2 = "" } 1' >"$WORK/nofe.cols"
awk -F'\t' '{ $2 = "" } 1' "$WORK/fe.cols" | cmp -s - "$WORK/nofe.cols" && ok "measuring leaves the training unchanged" \
    || not_ok "measuring leaves the training unchanged"

expect_status 0 "K-FAC with gamma chosen by the objective, the empirical Fisher and a fixed step" -- \
    "$KFAC" -q -f --log "$WORK/kfac2.tsv" --set optimizer.type=kfac --set optimizer.gamma_rule=objective \
    --set optimizer.fisher=empirical --set optimizer.step=fixed --set optimizer.learning_rate=0.5 \
    --set optimizer.use_momentum=false --set optimizer.pi=frobenius --set train.iterations=40 "$WORK/ae.ini"
[ "$(column_values "$WORK/kfac2.tsv" alpha | sort -u)" = "0.5" ] && ok "the fixed step keeps alpha" \
    || not_ok "the fixed step keeps alpha"
[ "$(column_values "$WORK/kfac2.tsv" mu | sort -u)" = "0" ] && ok "momentum off keeps mu at 0" \
    || not_ok "momentum off keeps mu at 0"
expect_status 2 "gamma bounds must be ordered" -- "$KFAC" -n --set optimizer.type=kfac \
    --set optimizer.gamma_min=2 --set optimizer.gamma_max=1 "$WORK/ae.ini"
expect_grep "$WORK/err" "gamma_min (2) exceeds optimizer.gamma_max" "the conflicting keys are named"

cat >"$WORK/cls.ini" <<INI
[data]
train = bars-images.gz
train_targets = bars-labels.gz
task = classification
test_fraction = 0.25
[model]
layers = 64-32:relu-16:softmax
init = he
[optimizer]
learning_rate = 0.1
[train]
iterations = 150
batch_size = 50
polyak_start = 100
[log]
eval_every = 0
INI
expect_status 0 "a classifier trains" -- "$KFAC" -q --log "$WORK/cls.tsv" "$WORK/cls.ini"
acc=$(column_values "$WORK/cls.tsv" test_acc | tail -n 1)
awk -v a="$acc" 'BEGIN { exit !(a > 0.9) }' && ok "bars are classified (test accuracy $acc)" ||
    not_ok "bars are classified (test accuracy $acc)"
expect_grep "$WORK/cls.tsv" "test_acc_avg" "averaging adds its columns"

"$MKFIXTURE" csv "$WORK/reg.csv" 400 2
cat >"$WORK/reg.ini" <<INI
[data]
train = reg.csv
task = regression
target_columns = y
test_fraction = 0.25
standardize = true
[model]
layers = 3-32:tanh-1:linear
init = glorot
[optimizer]
learning_rate = 0.02
[train]
iterations = 400
batch_size = 40
INI
expect_status 0 "a regression trains" -- "$KFAC" -q --log "$WORK/reg.tsv" "$WORK/reg.ini"
rmse=$(column_values "$WORK/reg.tsv" test_rmse | tail -n 1)
awk -v a="$rmse" 'BEGIN { exit !(a < 0.5) }' && ok "regression fits (test RMSE $rmse)" ||
    not_ok "regression fits (test RMSE $rmse)"

printf 'x1,x2,x3,y\n1,2,3,4\n1,2\n' >"$WORK/ragged.csv"
expect_status 2 "a ragged CSV is a data error" -- "$KFAC" --set data.train="$WORK/ragged.csv" "$WORK/reg.ini"
expect_grep "$WORK/err" "ragged.csv:3: expected 4 fields" "the ragged line is named"

# A convolutional classifier (the bars' position and orientation) with SGD, K-FAC (KFC
# blocks) and K-FOC, and its Fisher errors beside the loss.
cat >"$WORK/conv.ini" <<INI
[data]
train = bars-images.gz
train_targets = bars-labels.gz
task = classification
test_fraction = 0.2
[model]
layers = 1x8x8-conv(4,3,pad=1):relu-maxpool(2)-flatten-16:softmax
init = he
[optimizer]
learning_rate = 0.1
momentum = 0.9
lambda = 1
[train]
iterations = 30
batch_size = 50
[log]
eval_every = 10
INI
expect_status 0 "a conv dry run succeeds" -- "$KFAC" -n "$WORK/conv.ini"
expect_grep "$WORK/out" "layer 1: conv 1x8x8 -> 4x8x8, window 3x3 stride 1 pad 1 relu, 40 parameters" \
    "the dry run describes the convolution"
expect_grep "$WORK/out" "layer 3: flatten 4x4x4 -> 64" "and the flatten"
for opt in sgd kfac kfoc; do
    curv=block-diagonal type=kfac
    [ "$opt" = sgd ] && type=sgd
    [ "$opt" = kfoc ] && curv=kfoc
    expect_status 0 "a conv classifier trains with $opt" -- "$KFAC" -q --log "$WORK/conv-$opt.tsv" \
        --set optimizer.type=$type --set optimizer.curvature=$curv "$WORK/conv.ini"
    first=$(column_values "$WORK/conv-$opt.tsv" objective | head -n 1)
    last=$(column_values "$WORK/conv-$opt.tsv" objective | tail -n 1)
    acc=$(column_values "$WORK/conv-$opt.tsv" test_acc | tail -n 1)
    if awk -v a="$first" -v b="$last" -v c="$acc" 'BEGIN { exit !(b < 0.3 * a && c >= 0.95) }'; then
        ok "$opt lowers the conv objective ($first -> $last) to test accuracy $acc"
    else not_ok "$opt lowers the conv objective ($first -> $last) to test accuracy $acc"; fi
done
expect_status 0 "conv Fisher errors are logged" -- "$KFAC" -q --log "$WORK/conv-fe.tsv" \
    --set optimizer.type=kfac --set log.fisher_error_every=10 --set log.fisher_error_cases=20 \
    "$WORK/conv.ini"
n_fe=$(column_values "$WORK/conv-fe.tsv" fisher_kfac_1 | wc -l)
fe=$(column_values "$WORK/conv-fe.tsv" fisher_kfoc_4 | tail -n 1)
[ "$n_fe" -eq 3 ] && awk -v e="$fe" 'BEGIN { exit !(e > 0 && e < 1) }' \
    && ok "Fisher errors of layers 1 (conv) and 4 (dense) are logged ($n_fe rows, K-FOC $fe)" \
    || not_ok "conv Fisher errors: $n_fe rows, fisher_kfoc_4 = '$fe'"
expect_status 2 "kfac-tridiag refuses a convolution" -- "$KFAC" -q --set optimizer.type=kfac \
    --set optimizer.curvature=kfac-tridiag "$WORK/conv.ini"
expect_grep "$WORK/err" "kfac-tridiag needs dense layers only, but layer 1 is conv" "and names the layer"
expect_status 2 "a dense layer on a map is refused" -- "$KFAC" -n \
    --set "model.layers=1x8x8-conv(4,3):relu-16:softmax" "$WORK/conv.ini"
expect_grep "$WORK/err" "model.layers: layer 2: a dense layer needs a vector input" "with the fix"
expect_status 2 "image shapes must agree" -- "$KFAC" -q \
    --set "model.layers=2x4x8-conv(4,3):relu-flatten-16:softmax" "$WORK/conv.ini"
expect_grep "$WORK/err" "takes 2x4x8 images, but the cases of .*bars-images.gz are 1x8x8" \
    "the mismatch names both shapes"
expect_status 2 "a channel count the data lack is refused" -- "$KFAC" -q \
    --set "model.layers=3x8x8-conv(4,3):relu-flatten-16:softmax" "$WORK/conv.ini"
expect_grep "$WORK/err" "takes 3x8x8 images, but the cases of .*bars-images.gz are 1x8x8" \
    "named as shapes, not as input counts"

printf '[data]\ntrain = x\n[model]\nlayers = 2-2:linear\n[optimizer]\nlearning_rate = 1e5\n' >"$WORK/huge.ini"
printf 'a,b,y\n1,2,3\n2,1,1e30\n' >"$WORK/diverge.csv"
expect_status 1 "divergence is a run-time failure" -- "$KFAC" -q --set data.train="$WORK/diverge.csv" \
    --set data.task=regression --set data.target_columns=y --set model.layers=2-1:linear \
    --set train.batch_size=2 --set train.iterations=50 --log "$WORK/div.tsv" "$WORK/huge.ini"
expect_grep "$WORK/err" "not finite" "the failure names what went wrong"
finish
