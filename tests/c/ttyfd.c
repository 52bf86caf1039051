/* A terminal fd beyond the std streams: /dev/tty opened as a high fd, written before
 * and after sync point 1 (a restart under another terminal must give it that one).
 * Writes its pid to $MOS_SYNC/pid. */
#include "common.h"

int main(void)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/pid", mos_sync_dir());
    FILE *f = fopen(p, "w");
    fprintf(f, "%d\n", getpid());
    fclose(f);
    int t = open("/dev/tty", O_WRONLY);
    int hi = fcntl(t, F_DUPFD, 20);
    close(t);
    dprintf(hi, "tty before\n");
    mos_sync(1);
    int ok = dprintf(hi, "tty after\n") > 0;
    printf("after: write to the terminal %s, isatty %s\n", ok ? "ok" : "FAILED", isatty(hi) ? "yes" : "NO");
    return 0;
}
