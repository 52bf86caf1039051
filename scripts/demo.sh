#!/usr/bin/env bash
# mos demo: a CPU-bound job is checkpointed mid-run, stopped, and restarted twice from its
# image; its output is checked against an uninterrupted run.
set -euo pipefail
cd "$(dirname "$0")/.."
REL=$PWD/target/release
work=$(mktemp -d /tmp/mos-demo.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/job.c" <<'C'
#include <stdio.h>
#include <stdint.h>
#include <unistd.h>
int main(void) {
    uint64_t x = 1;
    for (int step = 0; step < 12; step++) {
        for (long i = 0; i < 40000000; i++) x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        printf("step %2d of 12  state %016llx  pid %d\n", step, (unsigned long long)x, getpid());
        fflush(stdout);
    }
    return 0;
}
C
cc -O1 -o "$work/job" "$work/job.c"
echo "== uninterrupted run"
( cd "$work" && ./job ) > "$work/expected.txt"
t0=$(date +%s.%N)
echo "== run under the shim; checkpoint with --exit after 4 steps"
( cd "$work" && LD_PRELOAD=$REL/libmosshim.so exec ./job ) > "$work/part1.txt" &
pid=$!
while [ "$(wc -l < "$work/part1.txt")" -lt 4 ]; do sleep 0.05; done
img=$("$REL/mos" ckpt "$pid" --exit -o "$work/job.mosimg")
wait "$pid" || true
echo "   image: $img ($(stat -c %s "$img") bytes); app exited after $(wc -l < "$work/part1.txt") steps"
"$REL/mos" image inspect "$img" | sed -n '2,6p' | sed 's/^/   /'
echo "== restart from the image (from another directory)"
( cd / && "$REL/mos" restart "$img" ) > "$work/part2.txt"
cat "$work/part1.txt" "$work/part2.txt" | sed 's/^/   /' | tail -3
echo "== restart the same image a second time"
( cd / && "$REL/mos" restart "$img" ) > "$work/part2b.txt"
strip() { sed 's/pid [0-9]*//'; }
if diff <(cat "$work/part1.txt" "$work/part2.txt" | strip) <(strip < "$work/expected.txt") >/dev/null &&
   diff "$work/part2.txt" "$work/part2b.txt" >/dev/null; then
    echo "== OK: output identical to the uninterrupted run, both restarts agree (wall $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s)"
else
    echo "== MISMATCH"; diff <(cat "$work/part1.txt" "$work/part2.txt") "$work/expected.txt" || true; exit 1
fi
