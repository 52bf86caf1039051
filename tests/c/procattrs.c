/* Process attributes outside memory: prctl (child subreaper, THP disable, no_new_privs,
 * dumpable), /proc/self/oom_score_adj and /proc/self/exe. Sets them, then prints them
 * before and after sync point 1 (a restart must print the same). /proc/self/exe both
 * as a link and as a file (stat: the program's inode, open: its ELF magic). */
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
    struct stat st = {0};
    stat("/proc/self/exe", &st);
    char magic[5] = "";
    fd = open("/proc/self/exe", O_RDONLY);
    if (fd >= 0) { if (read(fd, magic, 4) != 4) magic[0] = 0; close(fd); }
    printf("%s: subreaper %d thp_disable %d no_new_privs %d dumpable %d oom_score_adj %s ino %llu elf %d exe %s\n", when, sub,
           prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0), prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0), prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), adj,
           (unsigned long long)st.st_ino, memcmp(magic, "\177ELF", 4) == 0, base);
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
