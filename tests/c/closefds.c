/* closefds: closes every fd above 2 (as daemons do, taking the shim's own with them),
 * syncs (point 1), then reports the CPU time all its threads used meanwhile. */
#include "common.h"
#include <sys/syscall.h>

int main(void) {
    syscall(SYS_close_range, 3, ~0U, 0);
    mos_sync(1);
    mos_nap_ms(300);
    struct timespec cpu;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
    printf("cpu ms %ld\n", cpu.tv_sec * 1000 + cpu.tv_nsec / 1000000);
    return 0;
}
