/* A directory deleted while open (an fd on it) and a deleted current directory, kept
 * across sync point 1: both are still empty, deleted directories (fstat: a directory,
 * no links), and nothing can be created in them. Usage: deldir DIR (DIR is made and
 * used). Only booleans are printed. */
#include "common.h"
#include <sys/stat.h>

static const char *check(int dirfd, const char *what)
{
    static char bufs[2][128];
    static int k;
    char *out = bufs[k++ % 2];
    struct stat st;
    int isdir = fstatat(dirfd, "", &st, AT_EMPTY_PATH) == 0 && S_ISDIR(st.st_mode) && st.st_nlink == 0;
    int fd = openat(dirfd, "new", O_CREAT | O_WRONLY, 0600);
    int refused = fd < 0 && errno == ENOENT;
    if (fd >= 0)
        close(fd);
    snprintf(out, 128, "%s: deleted dir %s, create refused %s", what, isdir ? "yes" : "NO", refused ? "yes" : "NO");
    return out;
}

int main(int argc, char **argv)
{
    char a[4096], b[4096];
    snprintf(a, sizeof a, "%s/held", argv[1]);
    snprintf(b, sizeof b, "%s/cwd", argv[1]);
    mkdir(argv[1], 0700);
    mkdir(a, 0700);
    mkdir(b, 0700);
    int d = open(a, O_RDONLY | O_DIRECTORY);
    rmdir(a);
    chdir(b);
    rmdir(b);
    printf("before: %s; %s\n", check(d, "fd"), check(AT_FDCWD, "cwd"));
    fflush(stdout);
    mos_sync(1);
    printf("after: %s; %s\n", check(d, "fd"), check(AT_FDCWD, "cwd"));
    return 0;
}
