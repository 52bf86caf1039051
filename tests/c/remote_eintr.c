/* Signals that interrupt blocking calls on home fds, which after a migration are
 * forwarded calls waiting at home. stdin is a pipe the test leaves empty until the end.
 * Before mos_sync(1) (where the test migrates it) a SIGUSR1 handler without SA_RESTART is
 * installed; every SIGALRM handler is installed afterwards. In order:
 *   - read(0) interrupted by SIGUSR1 (sent by the test): EINTR;
 *   - read(0) interrupted by SIGALRM, handler without SA_RESTART: EINTR;
 *   - poll(stdin) interrupted by SIGALRM, handler with SA_RESTART: EINTR all the same
 *     (poll is never restarted);
 *   - read(0) interrupted by SIGALRM, handler with SA_RESTART: goes on waiting, and returns
 *     the line the test writes once it has seen "alarm 3" (written by the handler itself).
 * The output must be the same whether or not the process was migrated. */
#include "common.h"
#include <poll.h>
#include <signal.h>

static volatile sig_atomic_t alarms, usr1;

static void on_alarm(int sig)
{
    (void)sig;
    char m[] = "alarm 0\n";
    m[6] = (char)('0' + ++alarms);
    write(1, m, sizeof m - 1);
}

static void on_usr1(int sig)
{
    (void)sig;
    usr1 = 1;
}

static void handle(int sig, void (*h)(int), int flags)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = h;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
}

static void report(const char *what, ssize_t n)
{
    printf("%s: %zd %s\n", what, n, n < 0 ? strerror(errno) : "done");
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    char buf[64];
    handle(SIGUSR1, on_usr1, 0);
    mos_sync(1);
    printf("waiting usr1\n");
    report("usr1 read", read(0, buf, sizeof buf));
    handle(SIGALRM, on_alarm, 0);
    alarm(1);
    report("norestart read", read(0, buf, sizeof buf));
    handle(SIGALRM, on_alarm, SA_RESTART);
    alarm(1);
    struct pollfd p = { 0, POLLIN, 0 };
    report("restart poll", poll(&p, 1, -1));
    alarm(1);
    ssize_t n = read(0, buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = 0;
    printf("restart read: %zd %s", n, buf);
    printf("alarms %d usr1 %d\n", (int)alarms, (int)usr1);
    return 0;
}
