/* getpid() before and after the checkpoint (virtualized by the shim). */
#include "common.h"

int main(void)
{
    pid_t before = getpid();
    printf("pid before %d\n", (int)before);
    fflush(stdout);
    mos_sync(1);
    pid_t after = getpid();
    printf("pid after %d\n", (int)after);
    printf("same %d\n", before == after);
    fflush(stdout);
    /* optional second sync point (used by the re-checkpoint test) */
    if (getenv("PID_SECOND_SYNC"))
        mos_sync(2);
    printf("pid end %d\n", (int)getpid());
    return 0;
}
