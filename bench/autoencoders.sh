#!/bin/sh
# autoencoders.sh: the deep-autoencoder benchmarks of the K-FAC paper §7 (Figure 4's
# shape). For each problem (MNIST, CURVES, FACES) it trains the SGD baseline and each
# K-FAC/K-FOC variant for the same training time (evaluations excluded), then prints,
# per problem, each run's iterations, final training error, its error at iterations 500
# and 1000, and the time it took to reach the SGD run's final error, and plots the
# training error of all runs against seconds and against iterations.
#
#   bench/autoencoders.sh [-r] [-p PROBLEMS] [-v VARIANTS] [-d DATADIR] [-t LEVELS [-u UNIT]]
#                         [SECONDS [OUTDIR]]
#
#   SECONDS    training time per run (default 120; the K-FAC runs need about 800 s for
#              1000 iterations of CURVES on two cores)
#   OUTDIR     where logs, tables and plots go (default bench/out/autoencoders)
#   -p         problems among "mnist curves faces" (default all three) and "quickstart"
#              (configs/quickstart.ini and its twin configs/quickstart-sgd.ini: the
#              first-run comparison, e.g. -p quickstart -v "sgd kfac" 60)
#   -v         variants among "sgd kfac paper tridiag kfoc" (default all but paper): SGD
#              with Nesterov momentum (configs/PROBLEM-autoencoder-sgd.ini), block-diagonal
#              K-FAC (configs/PROBLEM-autoencoder.ini), the same with KFAC3's constants
#              (paper: optimizer.preset = kfac3, i.e. start = paper and the model on the
#              whole batch), block-tridiagonal K-FAC and K-FAC with K-FOC factors
#              (optimizer.curvature changed)
#   -d         data directory holding mnist/, curves/ and faces/ as the data scripts
#              write them (default data/)
#   -t         time to error: also print, for each run and each of the error levels in
#              LEVELS (e.g. "25 6.5"), when it first reached it, in seconds and in units
#              of the SGD iteration at batch 1000 on the MNIST autoencoder, which
#              bench/bench_kfac measures in the same invocation (so that the figures
#              compare across machines); writes OUTDIR/time-to-error.tsv, and the unit
#              into OUTDIR/sgd-iteration.txt, which -r reuses
#   -u         with -t: the SGD iteration's seconds, measured elsewhere, instead
#   -r         report on the logs already in OUTDIR without training
#
# Writes OUTDIR/PROBLEM-VARIANT.tsv (the kfac-train logs), OUTDIR/summary.tsv (the
# table printed), and OUTDIR/PROBLEM-seconds.png and OUTDIR/PROBLEM-iterations.png when
# gnuplot (or the program GNUPLOT names) is installed. Extra kfac-train options for every
# run can be given in KFAC_ARGS.
# Run it on an otherwise idle machine: the runs are compared by their clocks.
set -eu
name=autoencoders
. "$(dirname "$0")/lib.sh"
shift $shift_r
problems="mnist curves faces" variants="sgd kfac tridiag kfoc" datadir=$top/data levels= unit=
while getopts p:v:d:t:u: opt; do
    case $opt in
    p) problems=$OPTARG ;;
    v) variants=$OPTARG ;;
    d) datadir=$OPTARG ;;
    t) levels=$OPTARG ;;
    u) unit=$OPTARG ;;
    *) echo "usage: bench/autoencoders.sh [-r] [-p PROBLEMS] [-v VARIANTS] [-d DATADIR] [-t LEVELS [-u UNIT]] [SECONDS [OUTDIR]]" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
budget=${1:-120}
out=${2:-$top/bench/out/autoencoders}

# A problem's training file (MNIST holds out its test cases; the others have a test file
# beside it), and the kfac-train options that point at its data.
train_file() {
    case $1 in
    mnist | quickstart) echo "$datadir/mnist/mnist-10k-images-idx3-ubyte.gz" ;;
    *) echo "$datadir/$1/$1-train-images-idx3-ubyte.gz" ;;
    esac
}
data_args() {
    echo "--set data.train=$(train_file "$1")"
    case $1 in mnist | quickstart) ;; *) echo "--set data.test=$datadir/$1/$1-test-images-idx3-ubyte.gz" ;; esac
}
# A problem's K-FAC configuration, without .ini (its SGD one adds -sgd).
config_of() {
    case $1 in quickstart) echo "$top/configs/quickstart" ;; *) echo "$top/configs/$1-autoencoder" ;; esac
}
for p in $problems; do
    case $p in
    mnist | quickstart) script=data/fetch-mnist.sh ;;
    curves) script=data/make-curves.sh ;;
    faces) script=data/fetch-faces.sh ;;
    *) echo "$name: unknown problem '$p' (mnist, curves, faces or quickstart)" >&2; exit 2 ;;
    esac
    file=$(train_file "$p")
    [ "$report_only" = 1 ] || [ -r "$file" ] || { echo "$name: $p: $file is missing; $script makes it" >&2; exit 2; }
done
for v in $variants; do
    case $v in sgd | kfac | paper | tridiag | kfoc) ;; *) echo "$name: unknown variant '$v' (sgd, kfac, paper, tridiag or kfoc)" >&2; exit 2 ;; esac
done
# A number: digits with at most one point, and at least one digit.
is_number() {
    case $1 in '' | . | *[!0-9.]* | *.*.*) return 1 ;; esac
}
for l in $levels; do
    is_number "$l" || { echo "$name: -t: '$l' is not an error level (a number)" >&2; exit 2; }
done
if [ -n "$unit" ]; then
    [ -n "$levels" ] || { echo "$name: -u goes with -t" >&2; exit 2; }
    is_number "$unit" && awk -v u="$unit" 'BEGIN { exit !(u > 0) }' ||
        { echo "$name: -u: '$unit' is not a positive number of seconds" >&2; exit 2; }
fi
[ -z "$levels" ] || [ -n "$unit" ] || [ "$report_only" = 1 ] || [ -x "$top/bench/bench_kfac" ] ||
    { echo "$name: -t needs bench/bench_kfac (make bench) or -u" >&2; exit 2; }
mkdir -p "$out"

[ "$report_only" = 1 ] || for p in $problems; do
    for v in $variants; do
        case $v in
        sgd) cfg=$(config_of "$p")-sgd.ini extra= every=100 ;;
        kfac) cfg=$(config_of "$p").ini extra= every=25 ;;
        paper) cfg=$(config_of "$p").ini every=25
            extra="--set optimizer.preset=kfac3" ;;
        tridiag) cfg=$(config_of "$p").ini extra="--set optimizer.curvature=kfac-tridiag" every=25 ;;
        kfoc) cfg=$(config_of "$p").ini extra="--set optimizer.curvature=kfoc" every=25 ;;
        esac
        echo "$name: $p $v for $budget s ($(basename "$cfg"))" >&2
        # shellcheck disable=SC2046,SC2086 # the option lists are word lists
        "$kfac" -q -f --log "$out/$p-$v.tsv" --set train.max_seconds="$budget" \
            --set train.iterations=100000000 --set log.eval_every=$every $(data_args "$p") \
            $extra ${KFAC_ARGS:-} "$cfg"
    done
done

# One row per run: the error at iterations 500 and 1000 is the last evaluation at or
# before them (evaluations are every 25 iterations for K-FAC, 100 for SGD).
printf 'problem\tvariant\titerations\tseconds\tfinal_error\terror_at_500\terror_at_1000\tseconds_to_sgd_final\n' >"$out/summary.tsv"
for p in $problems; do
    target=nan
    if [ -r "$out/$p-sgd.tsv" ]; then
        target=$(errors "$out/$p-sgd.tsv" | tail -n 1 | cut -f3)
    fi
    for v in $variants; do
        log=$out/$p-$v.tsv
        [ -r "$log" ] || { echo "$name: $log is missing" >&2; exit 2; }
        errors "$log" | awk -F'\t' -v p="$p" -v v="$v" -v t="$target" '
            { if ($1 <= 500) e500 = $3; if ($1 <= 1000) e1000 = $3
              if (t != "nan" && reach == "" && $3 <= t + 0) reach = $2
              it = $1; s = $2; e = $3 }
            END { a = it >= 500 ? sprintf("%.4g", e500) : "-"
                  b = it >= 1000 ? sprintf("%.4g", e1000) : "-"
                  r = reach == "" ? "never" : sprintf("%.1f", reach)
                  printf "%s\t%s\t%d\t%.1f\t%.4g\t%s\t%s\t%s\n", p, v, it, s, e, a, b, r }' >>"$out/summary.tsv"
    done
done
echo "# training error (squared error per case); SGD's final error is each problem's target"
column -t -s "$(printf '\t')" "$out/summary.tsv" 2>/dev/null || cat "$out/summary.tsv"

# Time to error: the first evaluation at or below each level, in seconds and in SGD
# iterations of the MNIST autoencoder at batch 1000 (bench_kfac's second column: the
# median of three rounds).
if [ -n "$levels" ]; then
    if [ -z "$unit" ] && [ "$report_only" = 1 ] && [ -r "$out/sgd-iteration.txt" ]; then
        unit=$(cat "$out/sgd-iteration.txt")
    elif [ -z "$unit" ]; then
        [ -x "$top/bench/bench_kfac" ] || { echo "$name: -t needs bench/bench_kfac (make bench) or -u" >&2; exit 2; }
        unit=$("$top/bench/bench_kfac" 0.125 3 1000 | awk '$1 == 1000 { print $2; exit }')
    fi
    is_number "$unit" || { echo "$name: no SGD iteration time (bench/bench_kfac printed '$unit')" >&2; exit 2; }
    echo "$unit" >"$out/sgd-iteration.txt"
    { printf 'problem\tvariant'
      for l in $levels; do printf '\tseconds_to_%s\tsgd_units_to_%s' "$l" "$l"; done
      printf '\n'
      for p in $problems; do
          for v in $variants; do
              errors "$out/$p-$v.tsv" | awk -F'\t' -v p="$p" -v v="$v" -v u="$unit" -v levels="$levels" '
                  BEGIN { n = split(levels, lv, " ") }
                  { for (i = 1; i <= n; i++) if (!(i in at) && $3 <= lv[i] + 0) at[i] = $2 }
                  END { printf "%s\t%s", p, v
                        for (i = 1; i <= n; i++)
                            if (i in at) printf "\t%.1f\t%.0f", at[i], at[i] / u
                            else printf "\tnever\tnever"
                        printf "\n" }'
          done
      done; } >"$out/time-to-error.tsv"
    echo "# time to each error level: seconds, and SGD iterations (batch 1000, MNIST autoencoder: $unit s each)"
    column -t -s "$(printf '\t')" "$out/time-to-error.tsv" 2>/dev/null || cat "$out/time-to-error.tsv"
fi

for p in $problems; do
    logs=
    for v in $variants; do logs="$logs $out/$p-$v.tsv"; done
    for x in seconds iter; do
        suffix=$x
        [ $x = iter ] && suffix=iterations
        # shellcheck disable=SC2086 # logs is a list of files
        "$top/tools/kfac-plot" -x $x -y train_recon -t "$p autoencoder: training error, $budget s per run" \
            -o "$out/$p-$suffix.png" $logs || { echo "$name: no plots (see above)" >&2; break 2; }
    done
done
