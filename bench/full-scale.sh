#!/bin/sh
# full-scale.sh: the K-FAC paper's problems at their original size on one machine, full
# batch, in chunks: FACES-shaped (103,500 training and 1,000 test 25x25 stand-in faces
# from kfac-datagen, the paper's 625-2000-1000-500-30 autoencoder, configs/
# faces-autoencoder.ini) and MNIST-shaped (60,000 training and 1,000 test 28x28 CURVES
# images from kfac-datagen, configs/mnist-autoencoder.ini), each for ITERATIONS K-FAC
# iterations with the whole training set as the batch under train.memory_limit = LIMIT
# (train.chunk_size = auto). Prints, per problem, the chunk kfac-train chose and the
# memory it planned (its --dry-run), the seconds per iteration after the first (which
# decomposes from scratch), and the peak resident memory that GNU time measured.
#
#   bench/full-scale.sh [-r] [ITERATIONS [LIMIT [OUTDIR]]]    defaults: 3, 4G, bench/out/full-scale
#
# The FACES sources come from Debian's python3-skimage package as in data/fetch-faces.sh
# (apt-get download; nothing is installed). -r reports on the logs already in OUTDIR.
# Needs /usr/bin/time (Debian's time package). Run it on an otherwise idle machine.
set -eu
name=full-scale
. "$(dirname "$0")/lib.sh"
shift $shift_r
iterations=${1:-3}
limit=${2:-4G}
out=${3:-$top/bench/out/full-scale}
gen=$top/tools/kfac-datagen
[ -x /usr/bin/time ] || { echo "$name: needs /usr/bin/time (apt-get install time)" >&2; exit 2; }
mkdir -p "$out"

if [ "$report_only" = 0 ]; then
    if [ ! -f "$out/faces/faces-train-images-idx3-ubyte.gz" ]; then
        cache=$out/.cache
        rm -rf "$cache" && mkdir -p "$cache"
        (cd "$cache" && apt-get download python3-skimage >/dev/null && dpkg -x python3-skimage_*.deb x)
        "$gen" faces --force --seed 1 --sources 100 --train 103500 --test 1000 \
            "$cache/x/usr/lib/python3/dist-packages/skimage/data/lfw_subset.npy" "$out/faces"
        rm -rf "$cache"
    fi
    [ -f "$out/curves/curves-train-images-idx3-ubyte.gz" ] ||
        "$gen" curves --force --seed 1 --train 60000 --test 1000 --side 28 "$out/curves"
fi

for problem in faces mnist; do
    case $problem in
    faces) cfg=$top/configs/faces-autoencoder.ini data=$out/faces/faces cases=103500 ;;
    mnist) cfg=$top/configs/mnist-autoencoder.ini data=$out/curves/curves cases=60000 ;;
    esac
    set -- --set data.train="$data-train-images-idx3-ubyte.gz" \
        --set data.test="$data-test-images-idx3-ubyte.gz" \
        --set train.batch_schedule=fixed --set train.batch_size=$cases \
        --set train.iterations="$iterations" --set train.polyak_start=0 \
        --set train.memory_limit="$limit" --set log.eval_every="$iterations"
    if [ "$report_only" = 0 ]; then
        echo "$name: $problem, $cases cases, $iterations iterations" >&2
        "$kfac" -n "$@" "$cfg" | grep '^# ' >"$out/$problem-plan.txt"
        /usr/bin/time -f '%M' -o "$out/$problem-peak.txt" \
            "$kfac" -q -f --log "$out/$problem.tsv" "$@" "$cfg"
    fi
done

echo "# full batch under train.memory_limit = $limit (chunk_size = auto), $iterations K-FAC iterations"
printf '%-6s %8s %7s %12s %12s %12s\n' problem cases chunk planned_MiB peak_MiB s_per_iter
for problem in faces mnist; do
    case $problem in faces) cases=103500 ;; mnist) cases=60000 ;; esac
    chunk=$(sed -n 's/^# memory: \([0-9]*\) cases per pass.*/\1/p' "$out/$problem-plan.txt")
    planned=$(awk '/total, at least/ { v = $5; u = $6;
        print (u == "GiB" ? v * 1024 : u == "MiB" ? v : v / 1024) }' "$out/$problem-plan.txt")
    peak=$(awk '{ printf "%.0f", $1 / 1024 }' "$out/$problem-peak.txt")
    # The mean over iterations 2.. of the training seconds each took.
    per=$(awk -F'\t' 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "seconds") s = i; next }
        { t[$1] = $s } END { n = 0; for (k in t) if (k > 1) n++;
        printf "%.1f", n ? (t[n + 1] - t[1]) / n : 0 }' "$out/$problem.tsv")
    printf '%-6s %8s %7s %12s %12s %12s\n' "$problem" "$cases" "$chunk" "$planned" "$peak" "$per"
done
