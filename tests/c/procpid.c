/* /proc/<pid> with the process's own pid and tids, before and after sync point 1: the
 * pid the process knows (getpid) and a thread's (gettid) name the process in /proc in
 * open, fopen, opendir, stat, access and readlink, and /proc/self reads as getpid.
 * Only booleans are printed. */
#include "common.h"
#include <dirent.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/syscall.h>

static volatile int thread_tid;
static pthread_barrier_t bar;

static void *worker(void *a)
{
    (void)a;
    thread_tid = (int)syscall(SYS_gettid);
    pthread_barrier_wait(&bar);
    pthread_barrier_wait(&bar);
    return NULL;
}

static void check(const char *when)
{
    char p[128], l[64];
    struct stat st;
    int pid = getpid();
    snprintf(p, sizeof p, "/proc/%d/fd", pid);
    int st_ok = stat(p, &st) == 0 && S_ISDIR(st.st_mode);
    snprintf(p, sizeof p, "/proc/%d/status", pid);
    FILE *f = fopen(p, "r");
    int fopen_ok = f != NULL;
    if (f)
        fclose(f);
    snprintf(p, sizeof p, "/proc/%d/task", pid);
    DIR *d = opendir(p);
    int n = 0;
    if (d) {
        while (readdir(d))
            n++;
        closedir(d);
    }
    snprintf(p, sizeof p, "/proc/%d/task/%d/comm", pid, thread_tid);
    int fd = open(p, O_RDONLY);
    int open_ok = fd >= 0;
    if (fd >= 0)
        close(fd);
    snprintf(p, sizeof p, "/proc/%d/comm", thread_tid);
    int access_ok = access(p, R_OK) == 0;
    char want_pid[16], want_tid[16];
    snprintf(want_pid, sizeof want_pid, "%d", pid);
    snprintf(want_tid, sizeof want_tid, "%d", thread_tid);
    int listed = 0, task_listed = 0;
    DIR *pd = opendir("/proc");
    struct dirent *e;
    while (pd && (e = readdir(pd)))
        listed |= strcmp(e->d_name, want_pid) == 0;
    if (pd)
        closedir(pd);
    DIR *td = opendir("/proc/self/task");
    while (td && (e = readdir(td)))
        task_listed |= strcmp(e->d_name, want_tid) == 0;
    if (td)
        closedir(td);
    /* the process's own entry, not another's with the same number */
    struct stat a, b;
    snprintf(p, sizeof p, "/proc/%d", pid);
    int same = stat(p, &a) == 0 && stat("/proc/self/", &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev;
    ssize_t k = readlink("/proc/self", l, sizeof l - 1);
    l[k > 0 ? k : 0] = 0;
    char want[16];
    snprintf(want, sizeof want, "%d", pid);
    /* the same listings read raw (getdents64, and syscall(2) of it) */
    int raw_listed = 0, raw_task_listed = 0;
    for (int how = 0; how < 2; how++) {
        for (int t = 0; t < 2; t++) {
            int dfd = open(t ? "/proc/self/task" : "/proc", O_RDONLY | O_DIRECTORY);
            char db[32768];
            long got;
            int found = 0;
            while (dfd >= 0 && (got = how ? syscall(SYS_getdents64, dfd, db, sizeof db) : getdents64(dfd, db, sizeof db)) > 0)
                for (long at = 0; at < got;) {
                    struct dirent64 *d = (struct dirent64 *)(db + at);
                    found |= strcmp(d->d_name, t ? want_tid : want_pid) == 0;
                    at += d->d_reclen;
                }
            if (dfd >= 0)
                close(dfd);
            if (t)
                raw_task_listed += found;
            else
                raw_listed += found;
        }
    }
    /* the exe link names the program (not a restorer), by self and by the pid */
    char e1[4096] = "", e2[4096] = "";
    k = readlink("/proc/self/exe", e1, sizeof e1 - 1);
    e1[k > 0 ? k : 0] = 0;
    snprintf(p, sizeof p, "/proc/%d/exe", pid);
    k = readlink(p, e2, sizeof e2 - 1);
    e2[k > 0 ? k : 0] = 0;
    const char *base = strrchr(e1, '/') ? strrchr(e1, '/') + 1 : e1;
    int exe_ok = strcmp(base, "procpid") == 0 && strcmp(e1, e2) == 0;
    printf("%s: stat %s, own entry %s, fopen %s, opendir %s, open task %s, access tid %s, /proc/self %s, listed %s, task listed %s, getdents %s, exe %s\n", when, st_ok ? "ok" : "FAILED", same ? "ok" : "FAILED", fopen_ok ? "ok" : "FAILED",
           n >= 4 ? "ok" : "FAILED", open_ok ? "ok" : "FAILED", access_ok ? "ok" : "FAILED", strcmp(l, want) == 0 ? "ok" : "FAILED", listed ? "ok" : "FAILED", task_listed ? "ok" : "FAILED", raw_listed == 2 && raw_task_listed == 2 ? "ok" : "FAILED", exe_ok ? "ok" : "FAILED");
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
