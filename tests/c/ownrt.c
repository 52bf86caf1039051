/* ownrt: installs its own handler for SIGRTMAX-2 (the shim's default freeze signal) and
 * raises it before and after the checkpoint (sync point 1); every raise must reach it. */
#include "common.h"
#include <signal.h>

static volatile int got;
static void on_rt(int s) { (void)s; got++; }

int main(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_rt;
    sigaction(SIGRTMAX - 2, &sa, NULL);
    raise(SIGRTMAX - 2);
    printf("before %d\n", got);
    mos_sync(1);
    raise(SIGRTMAX - 2);
    kill(getpid(), SIGRTMAX - 2);
    printf("after %d\n", got);
    return 0;
}
