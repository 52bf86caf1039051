//! placer_bench: placement decision time and memory at cluster scale, the balancer's effect
//! in simulation, and the job database's cost. Prints figures and ratios measured in the
//! same run; asserts nothing about time.
//!
//! `placer_bench [--quick]` (`--quick` shrinks every scale by 10x for a smoke run).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::VecDeque;
use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use placer::db::Db;
use placer::id::JobId;
use placer::jobfile::{JobSpec, JobTemplate};
use placer::policy::{place_job, JobReq, NodeInfo, PlacementIndex, Snapshot};
use placer::simulate::{self, Rng, SimConfig};

/// The system allocator, counting live heap bytes so the bench can report memory per node
/// and per job.
struct CountingAlloc;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// Every method forwards to `System` with the caller's arguments unchanged, so the
// GlobalAlloc contract (layout validity, pointer provenance) is upheld by `System`.
// SAFETY: as above; the only addition is a relaxed atomic counter (no alloc, no unwind).
unsafe impl GlobalAlloc for CountingAlloc {
    // SAFETY: forwards to System (see the impl's note).
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours; the caller guarantees a non-zero-size layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    // SAFETY: forwards to System (see the impl's note).
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was returned by `alloc`/`realloc` above (i.e. by System) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    // SAFETY: forwards to System (see the impl's note).
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr`/`layout` come from this allocator (System underneath); the caller
        // guarantees `new_size` is valid for `layout.align()`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
            LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn live() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

fn random_nodes(rng: &mut Rng, n: usize, max_free_mib: Option<u64>) -> Vec<NodeInfo> {
    (0..n)
        .map(|i| {
            let total = rng.pick(&[4u64, 8, 16, 32, 64]) * 1024;
            NodeInfo {
                name: format!("node{i:05}"),
                cpus: rng.pick(&[1, 2, 4, 8, 16]),
                speed: rng.range(0.5, 2.0),
                run_queue: rng.below(8) as u32,
                guests: 0,
                free_mem_mib: max_free_mib.map_or(total, |m| rng.below(m + 1)),
                last_report_ms: 0,
                up: !rng.chance(0.02),
            }
        })
        .collect()
}

fn random_queue(rng: &mut Rng, m: usize) -> VecDeque<(JobId, JobReq)> {
    (0..m)
        .map(|k| {
            (
                JobId::new(1 + k as u64 / 1000, (k % 1000) as u32),
                JobReq {
                    mem_mib: rng.log_range(64.0, 8192.0) as u64,
                    cpus: if rng.chance(0.1) { 2 } else { 1 },
                },
            )
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Places the whole queue through the index, updating it as the daemon would. Returns the
/// per-decision times and how many jobs found a node.
fn drain_with_index(
    nodes: &mut [NodeInfo],
    queue: &VecDeque<(JobId, JobReq)>,
) -> (Vec<Duration>, usize) {
    let mut index = PlacementIndex::build(nodes);
    let mut times = Vec::with_capacity(queue.len());
    let mut placed = 0;
    for (_, req) in queue {
        let t = Instant::now();
        let choice = index.place(req);
        if let Some(i) = choice {
            let n = &mut nodes[i];
            n.run_queue += 1;
            n.free_mem_mib -= req.mem_mib;
            index.update(i, n);
            placed += 1;
        }
        times.push(t.elapsed());
    }
    (times, placed)
}

fn placement(scale: usize) {
    let n_nodes = 10_000 / scale;
    let n_jobs = 100_000 / scale;
    println!("== placement: {n_nodes} nodes, {n_jobs} queued jobs ==");
    for (label, max_free) in [
        ("roomy cluster (all jobs fit)", None),
        ("tight cluster (free memory 0..2 GiB per node)", Some(2048)),
    ] {
        let mut rng = Rng::new(42);
        let nodes0 = random_nodes(&mut rng, n_nodes, max_free);
        let queue = random_queue(&mut rng, n_jobs);

        let t = Instant::now();
        let index = PlacementIndex::build(&nodes0);
        let build = t.elapsed();
        drop(index);

        let mut nodes = nodes0.clone();
        let (mut times, placed) = drain_with_index(&mut nodes, &queue);
        let total: Duration = times.iter().sum();
        times.sort();
        let mean = total / times.len().max(1) as u32;

        // Naive scan (the pure function) on the same evolving state, for a prefix, checking
        // that both agree decision by decision.
        let naive_n = 1_000.min(queue.len());
        let mut snap = Snapshot {
            nodes: nodes0.clone(),
            now_ms: 0,
        };
        let mut index = PlacementIndex::build(&snap.nodes);
        let mut naive_total = Duration::ZERO;
        let mut agree = true;
        for (_, req) in queue.iter().take(naive_n) {
            let t = Instant::now();
            let choice = black_box(place_job(&snap, req));
            naive_total += t.elapsed();
            agree &= choice == index.place(req);
            if let Some(i) = choice {
                snap.nodes[i].run_queue += 1;
                snap.nodes[i].free_mem_mib -= req.mem_mib;
                index.update(i, &snap.nodes[i]);
            }
        }
        let naive_mean = naive_total / naive_n.max(1) as u32;
        println!("  {label}:");
        println!(
            "    index build: {:.2} ms; {placed}/{n_jobs} jobs placed",
            build.as_secs_f64() * 1e3
        );
        println!(
            "    indexed decision (incl. index update): mean {:.2} us, p50 {:.2} us, p99 {:.2} us, max {:.2} us  (budget 1000 us)",
            micros(mean),
            micros(percentile(&times, 0.5)),
            micros(percentile(&times, 0.99)),
            micros(percentile(&times, 1.0)),
        );
        println!(
            "    naive scan (place_job): mean {:.2} us over the first {naive_n} decisions; index is {:.0}x faster; same decisions: {}",
            micros(naive_mean),
            naive_mean.as_secs_f64() / mean.as_secs_f64().max(1e-12),
            if agree { "yes" } else { "NO" }
        );
    }
}

/// Worst case for the index: every node but the most loaded one is out of memory, so a
/// decision walks past all of them.
fn placement_worst_case(scale: usize) {
    let n_nodes = 10_000 / scale;
    let mut rng = Rng::new(9);
    let mut nodes = random_nodes(&mut rng, n_nodes, Some(0));
    for n in &mut nodes {
        n.up = true;
    }
    let worst = (0..nodes.len())
        .max_by(|&a, &b| {
            placer::policy::placement_score(&nodes[a])
                .total_cmp(&placer::policy::placement_score(&nodes[b]))
        })
        .unwrap_or(0);
    nodes[worst].free_mem_mib = 1 << 20;
    let index = PlacementIndex::build(&nodes);
    let req = JobReq {
        mem_mib: 1,
        cpus: 1,
    };
    let reps = 1_000u32;
    let t = Instant::now();
    for _ in 0..reps {
        assert_eq!(black_box(index.place(black_box(&req))), Some(worst));
    }
    let mean = t.elapsed() / reps;
    println!(
        "  worst case (only the most loaded of {n_nodes} nodes has memory): {:.1} us per decision (budget 1000 us)",
        micros(mean)
    );
}

fn memory(scale: usize) {
    println!("== memory (live heap bytes) ==");
    let template = JobTemplate::parse(
        "executable = \"/home/ana/bin/sim\"\narguments = \"--seed $(Process) --steps 100000\"\noutput = \"out/$(Process).txt\"\nerror = \"err/$(Process).txt\"\nrequest_memory = \"2 GiB\"\nqueue = 1",
        "bench.toml",
        Path::new("/home/ana/exp"),
    )
    .expect("the bench's own job file parses");
    let mut rows = Vec::new();
    for nodes in [1_000 / scale, 10_000 / scale] {
        let mut rng = Rng::new(7);
        let before = live();
        let snap = Snapshot {
            nodes: random_nodes(&mut rng, nodes, None),
            now_ms: 0,
        };
        let index = PlacementIndex::build(&snap.nodes);
        let bytes = live() - before;
        black_box((&snap, &index));
        rows.push(("node (snapshot row + index entry)", nodes, bytes));
    }
    for jobs in [10_000 / scale, 100_000 / scale] {
        let mut rng = Rng::new(7);
        let before = live();
        let queue = random_queue(&mut rng, jobs);
        let bytes = live() - before;
        black_box(&queue);
        rows.push(("queued job (id + request)", jobs, bytes));
        let before = live();
        let specs: Vec<JobSpec> = (0..jobs as u64)
            .map(|c| template.expand(c).remove(0))
            .collect();
        let bytes = live() - before;
        black_box(&specs);
        rows.push(("queued job (full JobSpec)", jobs, bytes));
    }
    for (what, count, bytes) in &rows {
        println!(
            "  {count:>7} x {what:<34}: {bytes:>11} bytes = {:>6.1} bytes each",
            *bytes as f64 / *count as f64
        );
    }
    let per = |i: usize| rows[i].2 as f64 / rows[i].1 as f64;
    println!(
        "  linearity (bytes each at 10x scale / at 1x): nodes {:.2}, queue entries {:.2}, JobSpecs {:.2}  (1.00 = linear)",
        per(1) / per(0),
        per(4) / per(2),
        per(5) / per(3)
    );
    let total_mib = (per(1) * 10_000.0 + per(5) * 100_000.0) / (1 << 20) as f64;
    println!("  => 10 000 nodes + 100 000 queued JobSpecs ~ {total_mib:.1} MiB");
}

fn simulation(scale: usize) {
    let nodes = 200 / scale;
    let jobs = 4_000 / scale;
    println!("== simulation: {nodes} nodes, {jobs} jobs, background load changing every 2 min ==");
    let with = SimConfig {
        background_every_ms: 120_000,
        ..SimConfig::new(nodes, jobs, 2024)
    };
    let without = SimConfig {
        balance: None,
        ..with.clone()
    };
    let t = Instant::now();
    let a = simulate::run(&with);
    let ta = t.elapsed();
    let b = simulate::run(&without);
    for (label, r) in [("balancer on ", &a), ("balancer off", &b)] {
        println!(
            "  {label}: mean turnaround {:>7.1} min, makespan {:>6.1} h, thrashing {:>7.1} node-h, {} load moves, {} ushering moves, {} finished / {} unplaceable",
            r.mean_turnaround_ms / 60_000.0,
            r.makespan_ms as f64 / 3_600_000.0,
            r.thrashing_node_ms as f64 / 3_600_000.0,
            r.balance_migrations,
            r.ushering_migrations,
            r.finished_jobs,
            r.unplaceable_jobs
        );
    }
    println!(
        "  ratio off/on: turnaround {:.2}x, makespan {:.2}x, thrashing {:.2}x   ({} simulated steps in {:.2} s)",
        b.mean_turnaround_ms / a.mean_turnaround_ms.max(1.0),
        b.makespan_ms as f64 / a.makespan_ms.max(1) as f64,
        b.thrashing_node_ms as f64 / a.thrashing_node_ms.max(1) as f64,
        a.steps,
        ta.as_secs_f64()
    );
}

fn database(scale: usize) {
    let jobs = 100_000 / scale as u32;
    println!("== job database (redb, fsync per commit) ==");
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            println!("  skipped: no temp dir ({e})");
            return;
        }
    };
    let run = || -> Result<(), placer::db::DbError> {
        let db = Db::open_in(dir.path())?;
        let template = JobTemplate::parse(
            &format!("executable = \"/bin/sim\"\narguments = \"$(Process)\"\noutput = \"o.$(Process)\"\nqueue = {jobs}"),
            "bench.toml",
            Path::new("/home/ana"),
        )
        .expect("the bench's own job file parses");
        let t = Instant::now();
        db.submit("ana", &template)?;
        let submit = t.elapsed();
        let t = Instant::now();
        let listed = db.list()?.len();
        let list = t.elapsed();
        let commits = 200u32;
        let t = Instant::now();
        for p in 0..commits {
            db.set_state(
                JobId::new(1, p),
                placer::db::StateChange::Start { node: "n1".into() },
            )?;
        }
        let per_commit = t.elapsed() / commits;
        let size = std::fs::metadata(db.path()).map(|m| m.len()).unwrap_or(0);
        println!(
            "  submit {jobs} jobs in one transaction: {:.0} ms ({:.1} us/job); list {listed}: {:.0} ms",
            submit.as_secs_f64() * 1e3,
            micros(submit) / f64::from(jobs),
            list.as_secs_f64() * 1e3
        );
        println!(
            "  one state change (one durable commit): {:.2} ms; file {:.1} MiB = {:.0} bytes/job",
            per_commit.as_secs_f64() * 1e3,
            size as f64 / (1 << 20) as f64,
            size as f64 / f64::from(jobs)
        );
        Ok(())
    };
    if let Err(e) = run() {
        println!("  failed: {e}");
    }
}

/// A central balancing round (plan_migrations on the live snapshot) at 10 000 nodes with
/// 4 processes each, half the nodes overloaded; and gossip's convergence after a burst.
fn balancing(scale: usize) {
    println!("== balancing at scale ==");
    let n_nodes = 10_000 / scale;
    let mut rng = Rng::new(11);
    let mut nodes = random_nodes(&mut rng, n_nodes, None);
    let mut jobs = Vec::new();
    for (i, n) in nodes.iter_mut().enumerate() {
        n.up = true;
        n.run_queue = if i % 2 == 0 { 8 } else { 0 };
        for k in 0..n.run_queue {
            jobs.push(placer::policy::RunningJob { id: placer::id::JobId::new(i as u64, k), node: i, mem_mib: 64, cpus: 1, since_ms: 0, migratable: true });
        }
    }
    let snap = placer::policy::Snapshot { nodes, now_ms: 1 << 40 };
    let params = placer::policy::BalanceParams { max_migrations: 4, ..Default::default() };
    let reps = 20u32;
    let t = Instant::now();
    let mut planned = 0;
    for _ in 0..reps {
        planned = black_box(placer::policy::plan_migrations(black_box(&snap), black_box(&jobs), &params)).len();
    }
    let mean = t.elapsed() / reps;
    println!("  central round at {n_nodes} nodes, {} processes: {:.2} ms ({planned} moves planned; budget 10 ms)", jobs.len(), micros(mean) / 1000.0);
    let (g_nodes, g_jobs) = (1_000 / scale, 5_000 / scale);
    let t = Instant::now();
    match placer::taxonomy::gossip_convergence(g_nodes, g_jobs, 1, 0.1, 20_000) {
        Some(r) => println!("  gossip: {g_jobs} processes burst on one of {g_nodes} nodes: spread within 10 % of balanced after {r} rounds ({:.1} s to simulate)", t.elapsed().as_secs_f64()),
        None => println!("  gossip: {g_jobs} processes on one of {g_nodes} nodes: not within 10 % after 20000 rounds"),
    }
}

fn main() {
    let scale = if std::env::args().any(|a| a == "--quick") {
        10
    } else {
        1
    };
    placement(scale);
    placement_worst_case(scale);
    memory(scale);
    simulation(scale);
    balancing(scale);
    database(scale);
}
