#!/usr/bin/env bash
# mos demo: a 3-node localhost cluster. First 3 CPU-bound processes started with
# `mos run` at node1 spread over the nodes by themselves (automatic load balancing).
# Then 6 batch jobs run with periodic checkpoints; one is vacated and resumes from its
# checkpoint, then a node is killed mid-way and its jobs resume elsewhere from their last
# checkpoint. Every output is checked against an uninterrupted run. The demo waits on
# what happens (the queue, the processes, the event log), never on fixed sleeps, and
# leaves its logs and event log in $MOS_HOME (it says where).
set -euo pipefail
cd "$(dirname "$0")/.."
REL=$PWD/target/release
MOS=$REL/mos
export MOS_HOME=$(mktemp -d /tmp/mos-demo.XXXXXX)
work=$MOS_HOME/work
mkdir -p "$work"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    "$MOS" cluster down >/dev/null 2>&1 || true
    echo
    echo "logs: $MOS_HOME/{placer,node1,node2,node3}.log; event log (HTCondor user log): $work/jobs.log"
    echo "(kept for reading; rm -rf $MOS_HOME when done)"
}
trap cleanup EXIT
t0=$(date +%s.%N)
say() { printf '\n== %s\n' "$*"; }
# wait_for WHAT SECONDS COMMAND...: poll COMMAND until it succeeds (what happens, not a
# fixed delay), or fail naming WHAT
wait_for() {
    local what=$1 deadline=$(( $(date +%s) + $2 ))
    shift 2
    until "$@"; do
        [ "$(date +%s)" -lt "$deadline" ] || { echo "timed out waiting for $what"; "$MOS" q || true; exit 1; }
        sleep 0.2
    done
}
# a python expression over `mos ... --json` (the JSON as j) that must be true
json_true() { local expr=$1; shift; "$MOS" "$@" --json | python3 -c "import json,sys,collections; j=json.load(sys.stdin); sys.exit(0 if ($expr) else 1)"; }

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

say "3 CPU-bound processes started with mos run at node1; nobody types migrate"
for s in 1 2 3; do
    MOS_HOME_NODE=node1 "$MOS" run -- "$work/job" 1$s 120 > "$work/run.$s.txt" 2>&1 &
    pids+=($!)
done
wait_for "the processes to spread over the nodes" 90 json_true 'len(set(p["node"] for p in j))>=2 and any(p["migrations"] for p in j)' ps
say "mos ps (bodies on other nodes, moved by the balancer; its reasons below)"
"$MOS" ps --events | grep -v "^placer" | head -12
for i in 0 1 2; do wait "${pids[$i]}"; done
pids=()
ok_runs=0
for s in 1 2 3; do
    if cmp -s <("$work/job" 1$s 120) "$work/run.$s.txt"; then ok_runs=$((ok_runs+1)); else echo "process $s: output differs"; fi
done
echo "outputs of the moved processes identical to uninterrupted runs: $ok_runs/3"

say "mossubmit job.toml"
(cd "$work" && "$REL/mossubmit" job.toml)
wait_for "jobs to run and checkpoint away from node1" 90 json_true 'sum(1 for r in j if r["state"]=="R" and r["node"]!="node1" and r["ckpts"]>=1)>=2' q
say "mos q (running)"
"$MOS" q
# vacate one job: checkpointed, requeued, resumed from the checkpoint (maybe elsewhere)
vjob=$("$MOS" q --json | python3 -c 'import json,sys; print([r["id"] for r in json.load(sys.stdin) if r["state"]=="R" and r["ckpts"]>=1][0])')
say "mos vacate $vjob"
"$MOS" vacate "$vjob"
ulog_id=$(python3 -c 'import sys; c,p=sys.argv[1].split("."); print("(%03d.%03d.000)" % (int(c), int(p)))' "$vjob")
# its events in the user log (ULOG): 004 evicted, then 001 executing again
events_of() { awk -v id="$ulog_id" '$2 == id && ($1 == "001" || $1 == "004")' "$work/jobs.log"; }
resumed() { events_of | awk '$1 == "004" { e = 1 } $1 == "001" && e { r = 1 } END { exit !r }'; }
wait_for "job $vjob to be evicted and to run again" 60 resumed
events_of | tail -2
# node1 is the submitting node: the jobs' home, where their output files are written
# through its shadowd (like HTCondor's schedd, it must stay up); any other node may die
victim=$("$MOS" q --json | python3 -c 'import json,sys,collections; c=collections.Counter(r["node"] for r in json.load(sys.stdin) if r["state"]=="R" and r["node"]!="node1"); print(c.most_common(1)[0][0] if c else "")')
[ -n "$victim" ] || { echo "no running job to evict"; exit 1; }
vpid=$(python3 -c 'import json,sys; print([n["pid"] for n in json.load(open(sys.argv[1]))["nodes"] if n["name"]==sys.argv[2]][0])' "$MOS_HOME/cluster.json" "$victim")
say "kill -9 the shadowd of $victim (pid $vpid): its jobs die with it"
kill -9 "$vpid"
wait_for "$victim to be seen down" 30 json_true "any(n['node']=='$victim' and n['state']=='down' for n in j)" status
say "mos status"
"$MOS" status
wait_for "the jobs of $victim to run elsewhere" 60 json_true "not any(r['node']=='$victim' and r['state']=='R' for r in j)" q
say "mos q (jobs of $victim restarted elsewhere from their last checkpoint)"
"$MOS" q
wait_for "every job to finish" 120 json_true 'len(j)==0' q
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
grep -E "^00[45] " "$work/jobs.log" | head -10
say "summary: $summary; vacated $vjob and resumed it; moved processes identical $ok_runs/3; outputs identical $ok/6; wall $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
[ "$ok" = 6 ] && [ "$ok_runs" = 3 ]
