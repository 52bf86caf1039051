/* A program that daemonizes: fork, the parent writes the child's pid to $MOS_SYNC/pid
 * and exits, the child calls setsid and counts, with sync point 1 in the middle. The
 * harness checkpoints the child (a forked process with no children of its own). Usage:
 * daemon OUTFILE (the child's output goes there: its parent's stdout is gone). */
#include "common.h"
#include <sys/wait.h>

int main(int argc, char **argv)
{
    pid_t c = fork();
    if (c > 0) {
        char p[4096];
        snprintf(p, sizeof p, "%s/pid", mos_sync_dir());
        FILE *f = fopen(p, "w");
        fprintf(f, "%d\n", c);
        fclose(f);
        return 0;
    }
    setsid();
    int null = open("/dev/null", O_RDWR);
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
    close(null);
    pid_t me = getpid();
    FILE *out = fopen(argv[1], "w");
    unsigned long h = 1469598103934665603UL;
    for (int i = 0; i < 40; i++) {
        h = (h ^ (unsigned long)i) * 1099511628211UL;
        fprintf(out, "%d %lx ppid-is-not-0 %s\n", i, h, getppid() != 0 ? "yes" : "no");
        fflush(out);
        if (i == 20)
            mos_sync(1);
    }
    fprintf(out, "done, pid kept %s\n", getpid() == me ? "yes" : "NO");
    fclose(out);
    return 0;
}
