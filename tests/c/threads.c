/* threads: 8 pthreads in different states across a checkpoint (sync point 1):
 *   workers 0-3: mutex + condvar + barrier rounds, __thread counters
 *   worker 4: blocked in read() on an in-process pipe
 *   worker 5: in nanosleep (a long sleep that must not end early)
 *   worker 6: in a futex wait (pthread_cond_wait until main signals)
 *   worker 7: holds a recursive mutex (relocks it after the restart)
 * Main holds an error-checking mutex across the checkpoint, then checks tids
 * (gettid, syscall(SYS_gettid), pthread_self), pthread_kill/tgkill delivery to
 * the right thread, and joins every thread, printing each result. */
#include "common.h"
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/syscall.h>

#define ROUNDS 400
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static pthread_barrier_t bar, start;
static pthread_mutex_t rec, ec;
static pthread_cond_t go6 = PTHREAD_COND_INITIALIZER;
static int go6_flag;
static long shared_counter;
static int pipefd[2];
static __thread long mine;
static __thread int who = -1;
static volatile int got_signal[8];
static volatile pid_t tid_of[8];

static void on_usr1(int s) { (void)s; if (who >= 0) got_signal[who]++; }

static void *worker(void *arg) {
    long id = (long)arg;
    who = (int)id;
    tid_of[id] = gettid();
    pid_t t0 = gettid();
    pthread_barrier_wait(&start); /* everyone started */
    if (id < 4) {
        for (int r = 0; r < ROUNDS; r++) {
            pthread_mutex_lock(&m);
            shared_counter += id + 1;
            mine += r;
            pthread_cond_broadcast(&cv);
            pthread_mutex_unlock(&m);
            if (r % 50 == 0) pthread_barrier_wait(&bar);
        }
    } else if (id == 4) {
        char buf[32] = {0};
        ssize_t n = read(pipefd[0], buf, sizeof buf - 1);
        mine = n > 0 ? (long)n * 1000 + buf[0] : -1;
    } else if (id == 5) {
        static char alt[65536];
        stack_t ss = {.ss_sp = alt, .ss_size = sizeof alt, .ss_flags = 0}, cur;
        sigaltstack(&ss, NULL);
        struct timespec a, b, req = {0, 400 * 1000000L};
        clock_gettime(CLOCK_MONOTONIC, &a);
        nanosleep(&req, NULL);
        clock_gettime(CLOCK_MONOTONIC, &b);
        long ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
        mine = ms >= 390 ? 1 : -ms; /* a checkpoint must not cut the sleep short */
        sigaltstack(NULL, &cur); /* the alternate signal stack survives */
        if (cur.ss_sp != alt || cur.ss_size != sizeof alt) mine = -7;
    } else if (id == 6) {
        pthread_mutex_lock(&m);
        while (!go6_flag) pthread_cond_wait(&go6, &m);
        pthread_mutex_unlock(&m);
        mine = 66;
    } else {
        pthread_mutex_lock(&rec);
        pthread_mutex_lock(&rec);
        mine = 70;
        while (got_signal[7] == 0) usleep(1000);
        int r1 = pthread_mutex_lock(&rec); /* owner relock after restart */
        pthread_mutex_unlock(&rec);
        pthread_mutex_unlock(&rec);
        pthread_mutex_unlock(&rec);
        mine += r1;
    }
    long same_tid = gettid() == t0 && syscall(SYS_gettid) == t0;
    return (void *)(mine * 10 + same_tid);
}

int main(void) {
    pthread_mutexattr_t at;
    pthread_mutexattr_init(&at);
    pthread_mutexattr_settype(&at, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&rec, &at);
    pthread_mutexattr_settype(&at, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutex_init(&ec, &at);
    signal(SIGUSR1, on_usr1);
    pipe(pipefd);
    pthread_barrier_init(&bar, NULL, 5); /* 4 workers of the mutex group + main */
    pthread_t t[8];
    pthread_barrier_init(&start, NULL, 9); /* 8 workers + main */
    for (long i = 0; i < 8; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    pthread_barrier_wait(&start);
    /* main takes part in the mutex group's barrier until they are done */
    pthread_mutex_lock(&ec);
    pid_t main_tid = gettid();
    pthread_t self = pthread_self();
    printf("started\n");
    for (int r = 0; r < ROUNDS; r += 50) {
        if (r == 200) mos_sync(1); /* checkpoint lands here, mid-run */
        pthread_barrier_wait(&bar);
    }
    while (!tid_of[7]) usleep(1000);
    CHECK(gettid() == main_tid && syscall(SYS_gettid) == main_tid && getpid() == main_tid, "main tid");
    CHECK(pthread_equal(self, pthread_self()), "pthread_self");
    /* signals to the right threads */
    pthread_kill(t[7], SIGUSR1);
    syscall(SYS_tgkill, getpid(), tid_of[6], SIGUSR1);
    write(pipefd[1], "Z-from-main", 11);
    pthread_mutex_lock(&m);
    go6_flag = 1;
    pthread_cond_signal(&go6);
    pthread_mutex_unlock(&m);
    printf("ec unlock %d\n", pthread_mutex_unlock(&ec));
    printf("ec unlock again is EPERM %d\n", pthread_mutex_unlock(&ec) == EPERM);
    long total = 0;
    for (int i = 0; i < 8; i++) {
        void *res;
        pthread_join(t[i], &res);
        printf("thread %d -> %ld\n", i, (long)res);
        total += (long)res;
    }
    printf("signals: t7 %d t6 %d others %d\n", got_signal[7] > 0, got_signal[6] > 0,
           got_signal[0] + got_signal[1] + got_signal[2] + got_signal[3] + got_signal[4] + got_signal[5]);
    printf("counter %ld total %ld\n", shared_counter, total);
    return 0;
}
