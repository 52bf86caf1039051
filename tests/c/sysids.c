/* Calls that name a process or thread by id, with the process's own pid and a thread's
 * tid, before and after sync point 1: sched_* (libc and syscall(2)), prlimit, pidfd_open,
 * process_vm_readv, kcmp, get_robust_list, getpriority. Only booleans are printed. */
#include "common.h"
#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <linux/kcmp.h>

static volatile int tid;
static pthread_barrier_t bar;
static long secret = 0x5eed;

static void *worker(void *a)
{
    (void)a;
    tid = (int)syscall(SYS_gettid);
    pthread_barrier_wait(&bar);
    pthread_barrier_wait(&bar);
    return NULL;
}

static void check(const char *when)
{
    int pid = getpid();
    cpu_set_t set;
    int aff = sched_getaffinity(pid, sizeof set, &set) == 0 && sched_getaffinity(tid, sizeof set, &set) == 0;
    int aff_sys = syscall(SYS_sched_getaffinity, pid, sizeof set, &set) > 0;
    struct sched_param sp;
    int sched = sched_getscheduler(pid) >= 0 && sched_getparam(tid, &sp) == 0;
    struct rlimit rl;
    int lim = prlimit(pid, RLIMIT_NOFILE, NULL, &rl) == 0;
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    int pidfd = pfd >= 0 && syscall(SYS_pidfd_send_signal, pfd, 0, NULL, 0) == 0;
    if (pfd >= 0)
        close(pfd);
    long got = 0;
    struct iovec l = { &got, sizeof got }, r = { &secret, sizeof secret };
    int vm = process_vm_readv(pid, &l, 1, &r, 1, 0) == (ssize_t)sizeof got && got == secret;
    int kc = syscall(SYS_kcmp, pid, pid, KCMP_FILE, 1, 1) == 0;
    void *head;
    size_t len;
    int robust = syscall(SYS_get_robust_list, tid, &head, &len) == 0;
    errno = 0;
    getpriority(PRIO_PROCESS, pid);
    int prio = errno == 0;
    printf("%s: affinity %s %s, sched %s, prlimit %s, pidfd %s, process_vm_readv %s, kcmp %s, robust list %s, priority %s\n", when, aff ? "ok" : "FAILED",
           aff_sys ? "ok" : "FAILED", sched ? "ok" : "FAILED", lim ? "ok" : "FAILED", pidfd ? "ok" : "FAILED", vm ? "ok" : "FAILED", kc ? "ok" : "FAILED",
           robust ? "ok" : "FAILED", prio ? "ok" : "FAILED");
}

int main(void)
{
    pthread_barrier_init(&bar, NULL, 2);
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    pthread_barrier_wait(&bar);
    check("before");
    fflush(stdout);
    mos_sync(1);
    check("after");
    pthread_barrier_wait(&bar);
    pthread_join(t, NULL);
    return 0;
}
