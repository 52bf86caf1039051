/* A Go-like runtime: 16 worker threads, each with its own alternate signal stack,
 * computing; a monitor thread preempts them with SIGURG (tgkill, as Go's sysmon does)
 * every millisecond, and the SA_ONSTACK handler counts the preemptions per thread and
 * checks it runs on that thread's stack. Sync point 1 comes mid-run. Each worker's
 * result is deterministic; preemptions are only counted. */
#include "common.h"
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>

#define N 16
static __thread char *alt;
static __thread int slot = -1;
static atomic_int preempt[N], off_stack[N];
static atomic_int tids[N];
static atomic_int phase; /* 0 before the sync point, 1 after */
static atomic_int after_preempt[N];
static atomic_int stop;

static void on_urg(int sig)
{
    (void)sig;
    char here;
    if (slot < 0)
        return;
    atomic_fetch_add(&preempt[slot], 1);
    if (atomic_load(&phase))
        atomic_fetch_add(&after_preempt[slot], 1);
    if (!(&here >= alt && &here < alt + 65536))
        atomic_fetch_add(&off_stack[slot], 1);
}

static uint64_t results[N];

static void *worker(void *a)
{
    slot = (int)(intptr_t)a;
    alt = malloc(65536);
    stack_t ss = { .ss_sp = alt, .ss_size = 65536 };
    sigaltstack(&ss, NULL);
    atomic_store(&tids[slot], (int)syscall(SYS_gettid));
    uint64_t x = 1469598103934665603ULL ^ (uint64_t)slot;
    for (long i = 0; i < 30000000L; i++) {
        x ^= (uint64_t)i;
        x *= 1099511628211ULL;
        if ((i & 0xfffff) == 0)
            sched_yield();
    }
    results[slot] = x;
    /* keep being preempted until every worker saw one after the sync point */
    while (!atomic_load(&stop))
        mos_nap_ms(1);
    return NULL;
}

static void *monitor(void *a)
{
    (void)a;
    while (!atomic_load(&stop)) {
        for (int i = 0; i < N; i++) {
            int t = atomic_load(&tids[i]);
            if (t)
                syscall(SYS_tgkill, getpid(), t, SIGURG);
        }
        mos_nap_ms(1);
    }
    return NULL;
}

int main(void)
{
    struct sigaction sa = { .sa_handler = on_urg, .sa_flags = SA_ONSTACK | SA_RESTART };
    sigaction(SIGURG, &sa, NULL);
    pthread_t w[N], m;
    for (int i = 0; i < N; i++)
        pthread_create(&w[i], NULL, worker, (void *)(intptr_t)i);
    pthread_create(&m, NULL, monitor, NULL);
    mos_nap_ms(30);
    printf("started %d workers\n", N);
    fflush(stdout);
    mos_sync(1);
    atomic_store(&phase, 1);
    int all = 0;
    for (int k = 0; k < 5000 && !all; k++) {
        all = 1;
        for (int i = 0; i < N; i++)
            all &= atomic_load(&after_preempt[i]) > 0;
        mos_nap_ms(2);
    }
    printf("every worker preempted after the sync point: %s\n", all ? "yes" : "NO");
    atomic_store(&stop, 1);
    for (int i = 0; i < N; i++)
        pthread_join(w[i], NULL);
    pthread_join(m, NULL);
    int bad = 0;
    for (int i = 0; i < N; i++)
        bad += atomic_load(&off_stack[i]);
    printf("handlers on their thread's altstack: %s\n", bad ? "NO" : "yes");
    uint64_t h = 0;
    for (int i = 0; i < N; i++)
        h = h * 31 + results[i];
    printf("results %016llx\n", (unsigned long long)h);
    return 0;
}
