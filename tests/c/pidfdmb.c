/* A pidfd of the process itself and a membarrier registration, kept across sync
 * point 1: after it the pidfd still names the process (pidfd_send_signal of signal 0,
 * poll says it runs) and the registered expedited membarrier still works (EPERM if
 * the registration was lost). Only booleans are printed. */
#include "common.h"
#include <linux/membarrier.h>
#include <poll.h>
#include <sys/syscall.h>

int main(void)
{
    int pfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    int reg = syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
    int mb = syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0;
    printf("before: pidfd %s, registered %s, barrier %s\n", pfd >= 0 ? "ok" : "FAILED", reg ? "ok" : "FAILED", mb ? "ok" : "FAILED");
    fflush(stdout);
    mos_sync(1);
    int sig = syscall(SYS_pidfd_send_signal, pfd, 0, NULL, 0) == 0;
    struct pollfd p = { pfd, POLLIN, 0 };
    int running = poll(&p, 1, 0) == 0;
    mb = syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0;
    printf("after: pidfd signals %s, running %s, barrier %s\n", sig ? "ok" : "FAILED", running ? "ok" : "FAILED", mb ? "ok" : "FAILED");
    return 0;
}
