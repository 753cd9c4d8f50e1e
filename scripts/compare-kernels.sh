#!/bin/sh
# Before/after timing of the kernels a change rewrote: two keel_profile_loop binaries (the one
# built before the change, kept aside, and build/keel_profile_loop), run in turns on one thread,
# each op x shape x path REPS times, and the median of each one's fastest call; prints a
# markdown table with new/old ratios (below 1: faster). The bench of record for issue 21's
# rewrites (BENCHMARKS.md, "One kernel body"). Timings on a shared machine are noisy: the
# alternation and the medians are what make the ratio fair.
# Usage: scripts/compare-kernels.sh OLD_LOOP NEW_LOOP [OPS [SHAPES]]
#   OPS: space-separated keel_profile_loop ops (default "lnf lnb rmsf rmsb bnf bnb")
#   SHAPES: space-separated ROWSxDIM (default "4096x768 4096x4096 256x1024 64x1024 2048x256 8x4096")
#   REPS (default 5), CALLS per run (default 200), ISAS (default "avx512 avx2": those the CPU has).
set -eu
old=$1
new=$2
ops=${3:-"lnf lnb rmsf rmsb bnf bnb"}
shapes=${4:-"4096x768 4096x4096 256x1024 64x1024 2048x256 8x4096"}
reps=${REPS:-5}
calls=${CALLS:-200}
isas=${ISAS:-"avx512 avx2"}

# the fastest call of one run, in us
fastest() { KEEL_ISA=$1 "$2" "$3" "$4" "$5" "$calls" | sed -n 's/.*fastest of [0-9]* calls \([0-9.]*\) us.*/\1/p'; }
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

echo "| path | op | rows x dim | before (us) | after (us) | after / before |"
echo "|---|---|---|---:|---:|---:|"
for isa in $isas; do
    KEEL_ISA=$isa "$new" copy 1 16 1 > /dev/null 2>&1 || continue # a path this CPU lacks
    for op in $ops; do
        for shape in $shapes; do
            rows=${shape%x*}
            dim=${shape#*x}
            a=""
            b=""
            i=0
            while [ $i -lt "$reps" ]; do
                a="$a $(fastest "$isa" "$old" "$op" "$rows" "$dim")"
                b="$b $(fastest "$isa" "$new" "$op" "$rows" "$dim")"
                i=$((i + 1))
            done
            ma=$(echo $a | tr ' ' '\n' | median)
            mb=$(echo $b | tr ' ' '\n' | median)
            echo "| $isa | $op | $rows x $dim | $ma | $mb | $(awk -v a="$ma" -v b="$mb" 'BEGIN {printf "%.3f", b / a}') |"
        done
    done
done
