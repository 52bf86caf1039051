/* epoll sets that watch home fds, across a migration. Before mos_sync(1) (where the test
 * migrates it) a set is built with stdin (a pipe at home, data 100) and an eventfd (a
 * local kernel object, data 200). After it, in order: nothing ready; the eventfd's event
 * alone; stdout (a pipe at home) added for EPOLLOUT|EPOLLONESHOT: reported once, then
 * not until EPOLL_CTL_MOD re-arms it; EEXIST and ENOENT; a timerfd that fires while the
 * set waits for stdin; a wait for ever that the line
 * the test writes to stdin ends; a set made after the migration with only a home fd.
 * The output must be the same whether or not the process was migrated. */
#include "common.h"
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <poll.h>

static int ep;

static void show(const char *what, int timeout)
{
    struct epoll_event ev[8];
    int n = epoll_wait(ep, ev, 8, timeout);
    printf("%s: %d", what, n);
    for (int i = 0; i < n; i++)
        printf(" %llu/%s", (unsigned long long)ev[i].data.u64, ev[i].events & EPOLLIN ? "in" : ev[i].events & EPOLLOUT ? "out" : "?");
    printf("\n");
}

static void ctl(const char *what, int op, int fd, uint32_t events, uint64_t data)
{
    struct epoll_event e = { .events = events, .data.u64 = data };
    int r = epoll_ctl(ep, op, fd, &e);
    printf("%s: %d %s\n", what, r, r < 0 ? strerror(errno) : "ok");
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    ep = epoll_create1(EPOLL_CLOEXEC);
    int efd = eventfd(0, EFD_NONBLOCK);
    ctl("add stdin", EPOLL_CTL_ADD, 0, EPOLLIN, 100);
    ctl("add eventfd", EPOLL_CTL_ADD, efd, EPOLLIN, 200);
    mos_sync(1);
    show("idle", 100);
    uint64_t one = 1;
    if (write(efd, &one, 8) != 8) return 91;
    show("eventfd", 1000);
    if (read(efd, &one, 8) != 8) return 92;
    ctl("add stdout", EPOLL_CTL_ADD, 1, EPOLLOUT | EPOLLONESHOT, 300);
    ctl("add stdout again", EPOLL_CTL_ADD, 1, EPOLLOUT, 300);
    show("oneshot", 1000);
    show("disarmed", 50);
    ctl("mod stdout", EPOLL_CTL_MOD, 1, EPOLLOUT | EPOLLONESHOT, 301);
    show("rearmed", 1000);
    ctl("del stdout", EPOLL_CTL_DEL, 1, 0, 0);
    ctl("del stdout again", EPOLL_CTL_DEL, 1, 0, 0);
    ctl("mod stderr", EPOLL_CTL_MOD, 2, EPOLLOUT, 0);
    /* a local entry that becomes ready while the set waits (at home, for stdin) */
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    struct itimerspec its = { .it_value = { 0, 200 * 1000 * 1000 } };
    timerfd_settime(tfd, 0, &its, NULL);
    ctl("add timerfd", EPOLL_CTL_ADD, tfd, EPOLLIN, 500);
    show("timer", -1);
    ctl("del timerfd", EPOLL_CTL_DEL, tfd, 0, 0);
    /* the same with poll on stdin (home) and the timerfd (local) */
    timerfd_settime(tfd, 0, &its, NULL);
    struct pollfd pf[2] = { { 0, POLLIN, 0 }, { tfd, POLLIN, 0 } };
    int pr = poll(pf, 2, -1);
    printf("poll timer: %d %d %d\n", pr, pf[0].revents, pf[1].revents);
    close(tfd);
    printf("waiting stdin\n");
    show("stdin", -1);
    char buf[64];
    ssize_t n = read(0, buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = 0;
    printf("read: %s", buf);
    int ep2 = epoll_create1(0);
    struct epoll_event e = { .events = EPOLLIN, .data.u64 = 400 }, out;
    epoll_ctl(ep2, EPOLL_CTL_ADD, 0, &e);
    printf("home-only set idle: %d\n", epoll_pwait(ep2, &out, 1, 100, NULL));
    close(ep2);
    close(ep);
    return 0;
}
