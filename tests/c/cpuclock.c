/* CPU-time clocks across a restart: ids from clock_getcpuclockid(getpid()) and
 * pthread_getcpuclockid (they encode the pid and tid) still read after sync point 1,
 * and the process's and each thread's CPU time never goes back (CLOCK_PROCESS_ and
 * CLOCK_THREAD_CPUTIME_ID, the ids, clock()). Only booleans are printed. */
#include "common.h"
#include <pthread.h>

static double ns(clockid_t c, int *ok)
{
    struct timespec t;
    if (clock_gettime(c, &t) != 0) {
        *ok = 0;
        return 0;
    }
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static void burn(double ms)
{
    struct timespec a, b;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
    do {
        for (volatile int i = 0; i < 100000; i++)
            ;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
    } while ((b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6 < ms);
}

static pthread_barrier_t bar;
static double w_before, w_after;
static int w_ok = 1;

static void *worker(void *a)
{
    (void)a;
    burn(60);
    w_before = ns(CLOCK_THREAD_CPUTIME_ID, &w_ok);
    pthread_barrier_wait(&bar);
    pthread_barrier_wait(&bar);
    w_after = ns(CLOCK_THREAD_CPUTIME_ID, &w_ok);
    return NULL;
}

int main(void)
{
    pthread_barrier_init(&bar, NULL, 2);
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    burn(80);
    clockid_t pc, tc;
    int ok = clock_getcpuclockid(getpid(), &pc) == 0;
    ok &= pthread_getcpuclockid(t, &tc) == 0;
    pthread_barrier_wait(&bar);
    int rd = 1;
    double p0 = ns(pc, &rd), q0 = ns(CLOCK_PROCESS_CPUTIME_ID, &rd), t0 = ns(tc, &rd), m0 = ns(CLOCK_THREAD_CPUTIME_ID, &rd);
    clock_t c0 = clock();
    printf("before: ids %s, read %s\n", ok ? "ok" : "FAILED", rd ? "ok" : "FAILED");
    fflush(stdout);
    mos_sync(1);
    rd = 1;
    double p1 = ns(pc, &rd), q1 = ns(CLOCK_PROCESS_CPUTIME_ID, &rd), t1 = ns(tc, &rd), m1 = ns(CLOCK_THREAD_CPUTIME_ID, &rd);
    clock_t c1 = clock();
    clockid_t pc2;
    int again = clock_getcpuclockid(getpid(), &pc2) == 0 && pc2 == pc;
    printf("after: ids read %s, id again %s\n", rd ? "ok" : "FAILED", again ? "ok" : "FAILED");
    printf("process clock monotonic: %s %s %s\n", p1 >= p0 ? "yes" : "NO", q1 >= q0 ? "yes" : "NO", c1 >= c0 ? "yes" : "NO");
    printf("thread clocks monotonic: %s %s\n", t1 >= t0 ? "yes" : "NO", m1 >= m0 ? "yes" : "NO");
    pthread_barrier_wait(&bar);
    pthread_join(t, NULL);
    printf("worker's own clock monotonic: %s\n", w_ok && w_after >= w_before ? "yes" : "NO");
    return 0;
}
