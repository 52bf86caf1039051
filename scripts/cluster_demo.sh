#!/usr/bin/env bash
# mos demo: a 3-node localhost cluster runs 6 CPU-bound batch jobs with periodic
# checkpoints; one node is killed mid-way and its jobs resume elsewhere from their last
# checkpoint; every output is checked against an uninterrupted run.
set -euo pipefail
cd "$(dirname "$0")/.."
REL=$PWD/target/release
MOS=$REL/mos
export MOS_HOME=$(mktemp -d /tmp/mos-demo.XXXXXX)
work=$MOS_HOME/work
mkdir -p "$work"
cleanup() { "$MOS" cluster down >/dev/null 2>&1 || true; rm -rf "$MOS_HOME"; }
trap cleanup EXIT
t0=$(date +%s.%N)
say() { printf '\n== %s\n' "$*"; }

cat > "$work/job.c" <<'C'
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    int p = atoi(argv[1]), n = atoi(argv[2]);
    uint64_t x = p + 1;
    for (int s = 0; s < n; s++) {
        for (long i = 0; i < 25000000; i++) x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        printf("job %d step %2d of %d state %016llx\n", p, s, n, (unsigned long long)x);
        fflush(stdout);
    }
    return 0;
}
C
cc -O1 -o "$work/job" "$work/job.c"
cat > "$work/job.toml" <<'T'
executable = "job"
arguments = "$(Process) 40"
output = "out.$(Process).txt"
error = "err.$(Process).txt"
log = "jobs.log"
checkpoint_interval = "1s"
request_memory = "64 MiB"
queue = 6
T

say "mos cluster init && mos cluster up --nodes 3"
"$MOS" cluster init
"$MOS" cluster up --nodes 3 --interval-ms 300
say "mossubmit job.toml"
(cd "$work" && "$REL/mossubmit" job.toml)
sleep 2.5
say "mos q (running)"
"$MOS" q
# node1 is the submitting node: the jobs' home, where their output files are written
# through its shadowd (like HTCondor's schedd, it must stay up); any other node may die
victim=$("$MOS" q --json | python3 -c 'import json,sys,collections; c=collections.Counter(r["node"] for r in json.load(sys.stdin) if r["state"]=="R" and r["node"]!="node1"); print(c.most_common(1)[0][0] if c else "")')
[ -n "$victim" ] || { echo "no running job to evict"; exit 1; }
vpid=$(python3 -c 'import json,sys; print([n["pid"] for n in json.load(open(sys.argv[1]))["nodes"] if n["name"]==sys.argv[2]][0])' "$MOS_HOME/cluster.json" "$victim")
say "kill -9 the shadowd of $victim (pid $vpid): its jobs die with it"
kill -9 "$vpid"
sleep 2
say "mos status"
"$MOS" status
say "mos q (jobs of $victim restarted elsewhere from their last checkpoint)"
"$MOS" q
deadline=$(( $(date +%s) + 90 ))
while [ "$("$MOS" q --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" != 0 ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "jobs did not finish in time"; "$MOS" q; exit 1; }
    sleep 1
done
say "mos history"
"$MOS" history
say "verifying outputs against uninterrupted runs"
ok=0
for p in 0 1 2 3 4 5; do
    if cmp -s <("$work/job" $p 40) "$work/out.$p.txt"; then ok=$((ok+1)); else echo "job $p: output differs"; fi
done
summary=$("$MOS" history --json | python3 -c '
import json, sys
rows = json.load(sys.stdin)
nodes = " ".join(sorted(set(r["node"] for r in rows)))
ck = sum(r["ckpts"] for r in rows)
rs = sum(r["restarts"] for r in rows)
print("%d jobs, finished on %s, %d checkpoints, %d restarts" % (len(rows), nodes, ck, rs))')
say "event log (jobs.log, excerpt)"
grep -E "^00[145] " "$work/jobs.log" | head -8
say "summary: $summary; outputs identical $ok/6; wall $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
[ "$ok" = 6 ]
