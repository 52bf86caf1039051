/* kernobj: kernel objects inside one process across a checkpoint (sync point 1):
 * a pipe with buffered bytes and a reader thread blocked on it, an eventfd with a
 * count, an epoll set watching it, a timerfd, a signalfd, a POSIX timer
 * (SIGEV_SIGNAL, periodic) and anonymous MAP_SHARED memory. */
#include "common.h"
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>

static volatile int ticks;
static int p[2], q[2];
static void on_tick(int s, siginfo_t *si, void *u) { (void)s; (void)u; if (si->si_value.sival_int == 5) ticks++; }
static void *reader(void *a) {
    (void)a;
    char buf[64] = {0};
    ssize_t n = read(q[0], buf, sizeof buf - 1);
    printf("reader got %zd '%s'\n", n, buf);
    return NULL;
}

int main(void) {
    sigset_t pend;
    sigemptyset(&pend);
    sigaddset(&pend, SIGWINCH);
    sigaddset(&pend, SIGRTMIN + 3);
    pthread_sigmask(SIG_BLOCK, &pend, NULL);
    pipe(p);
    pipe(q);
    write(p[1], "buffered", 8);
    int efd = eventfd(7, 0);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 42};
    epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev);
    int *shm = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    shm[0] = 1234;
    shm[2000] = 5678;
    struct sigaction sa = {0};
    sa.sa_sigaction = on_tick;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(SIGRTMIN + 1, &sa, NULL);
    timer_t t;
    struct sigevent se = {0};
    se.sigev_notify = SIGEV_SIGNAL;
    se.sigev_signo = SIGRTMIN + 1;
    se.sigev_value.sival_int = 5;
    timer_create(CLOCK_MONOTONIC, &se, &t);
    struct itimerspec its = {{0, 20000000}, {0, 20000000}};
    timer_settime(t, 0, &its, NULL);
    int tfd = timerfd_create(CLOCK_MONOTONIC, 0);
    struct itimerspec ts2 = {{0, 0}, {30, 0}};
    timerfd_settime(tfd, 0, &ts2, NULL);
    sigset_t hup;
    sigemptyset(&hup);
    sigaddset(&hup, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &hup, NULL);
    int sfd = signalfd(-1, &hup, 0);
    char b[8];
    read(p[0], b, 3); /* "buf" consumed, "fered" stays buffered */
    pthread_t th;
    pthread_create(&th, NULL, reader, NULL);
    while (ticks < 2) usleep(1000);
    /* pending signals (blocked in every thread): one for this thread, one for the process */
    tgkill(getpid(), gettid(), SIGWINCH);
    kill(getpid(), SIGRTMIN + 3);
    printf("before fds pipe %d,%d,%d,%d efd %d ep %d tfd %d sfd %d\n", p[0], p[1], q[0], q[1], efd, ep, tfd, sfd);
    mos_sync(1); /* the reader is blocked on q; p holds "fered" */
    write(q[1], "wake", 4);
    pthread_join(th, NULL);
    char rest[16] = {0};
    printf("buffered bytes %zd '%s'\n", read(p[0], rest, 5), rest);
    write(p[1], "more", 4);
    read(p[0], b, 4);
    printf("pipe still works %d\n", memcmp(b, "more", 4) == 0);
    struct epoll_event out;
    int n = epoll_wait(ep, &out, 1, 1000);
    uint64_t v = 0;
    read(efd, &v, 8);
    printf("epoll n=%d data=%lu eventfd=%lu shm=%d,%d\n", n, (unsigned long)out.data.u64, (unsigned long)v, shm[0], shm[2000]);
    int before = ticks;
    for (int k = 0; k < 20; k++) usleep(10000);
    printf("posix timer still ticking %d\n", ticks - before >= 2);
    sigset_t now;
    sigpending(&now);
    printf("pending winch %d rtmin+3 %d\n", sigismember(&now, SIGWINCH), sigismember(&now, SIGRTMIN + 3));
    struct itimerspec cur;
    timerfd_gettime(tfd, &cur);
    printf("timerfd armed %d\n", cur.it_value.tv_sec >= 20 && cur.it_value.tv_sec <= 30);
    raise(SIGHUP);
    struct signalfd_siginfo si;
    ssize_t sn = read(sfd, &si, sizeof si);
    printf("signalfd read %zd signo %u\n", sn, si.ssi_signo);
    return 0;
}
