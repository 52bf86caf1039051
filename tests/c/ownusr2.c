/* An application with its own SIGUSR2 handler.  Signals it sends itself must
 * reach its handler (before and after a restart, via raise() and
 * kill(getpid())); an external SIGUSR2 still checkpoints.
 */
#include "common.h"
#include <signal.h>

static volatile sig_atomic_t hits;
static void on_usr2(int sig) { (void)sig; hits++; }

int main(void)
{
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr2;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR2, &sa, NULL);
    sigaction(SIGUSR2, NULL, &old);
    printf("handler visible %d\n", old.sa_handler == on_usr2);
    raise(SIGUSR2);
    kill(getpid(), SIGUSR2);
    printf("hits after self-signals %d\n", (int)hits);
    printf("sync 1\n");
    fflush(stdout);
    mos_sync(1);
    printf("hits after sync %d\n", (int)hits);
    raise(SIGUSR2);
    kill(getpid(), SIGUSR2);
    printf("hits at end %d\n", (int)hits);
    return 0;
}
