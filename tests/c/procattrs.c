/* Process attributes outside memory: prctl (child subreaper, THP disable, no_new_privs,
 * dumpable), /proc/self/oom_score_adj and /proc/self/exe. Sets them, then prints them
 * before and after sync point 1 (a restart must print the same). */
#include "common.h"
#include <sys/prctl.h>

static void show(const char *when)
{
    int sub = -1;
    prctl(PR_GET_CHILD_SUBREAPER, &sub, 0, 0, 0);
    char exe[4096] = "";
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) exe[n] = 0;
    const char *base = strrchr(exe, '/') ? strrchr(exe, '/') + 1 : exe;
    char adj[32] = "";
    int fd = open("/proc/self/oom_score_adj", O_RDONLY);
    if (fd >= 0) { n = read(fd, adj, sizeof adj - 1); if (n > 0) adj[n - 1] = 0; close(fd); }
    printf("%s: subreaper %d thp_disable %d no_new_privs %d dumpable %d oom_score_adj %s exe %s\n", when, sub,
           prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0), prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0), prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), adj, base);
    fflush(stdout);
}

int main(void)
{
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    int fd = open("/proc/self/oom_score_adj", O_WRONLY);
    if (fd >= 0) { if (write(fd, "321", 3) != 3) return 65; close(fd); }
    show("before");
    mos_sync(1);
    show("after");
    return 0;
}
