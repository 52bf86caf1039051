/* Isolation check, run after migration (mos_sync(1) is where the test migrates it):
 * argv[1] is a directory in the home node's /tmp. Creates c_fopen.txt with fopen/fprintf
 * and c_raw.txt with a raw syscall(SYS_openat), and stats home_only.txt, which exists
 * only in the home node's /tmp. */
#include "common.h"
#include <sys/stat.h>
#include <sys/syscall.h>

int main(int argc, char **argv)
{
    if (argc < 2) return 90;
    char p[4096];
    mos_sync(1);
    snprintf(p, sizeof p, "%s/c_fopen.txt", argv[1]);
    FILE *f = fopen(p, "w");
    if (!f) { printf("fopen: %s\n", strerror(errno)); return 1; }
    fprintf(f, "written by fprintf\n");
    fclose(f);
    snprintf(p, sizeof p, "%s/c_raw.txt", argv[1]);
    int fd = syscall(SYS_openat, AT_FDCWD, p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { printf("openat: %s\n", strerror(errno)); return 1; }
    syscall(SYS_write, fd, "written by syscall\n", 19);
    syscall(SYS_close, fd);
    /* fchmodat2 (no glibc wrapper yet) changes the home file's mode */
    snprintf(p, sizeof p, "%s/c_raw.txt", argv[1]);
    printf("fchmodat2: %s\n", syscall(452, AT_FDCWD, p, 0600, 0) == 0 ? "ok" : strerror(errno));
    /* path-based calls newer than any forwarded form: refused, never run on this node */
    printf("getxattrat: %s\n", syscall(464, AT_FDCWD, p, 0, "user.x", (void *)0, 0) == 0 ? "allowed" : strerror(errno));
    /* kernel-side asynchronous I/O would touch this node's files: refused */
    char params[120] = { 0 };
    printf("io_uring_setup: %s\n", syscall(425, 4, params) >= 0 ? "allowed" : strerror(errno));
    unsigned long ctx = 0;
    printf("io_setup: %s\n", syscall(206, 4, &ctx) == 0 ? "allowed" : strerror(errno));
    struct stat st;
    snprintf(p, sizeof p, "%s/home_only.txt", argv[1]);
    printf("home_only: %s\n", stat(p, &st) == 0 ? "found" : strerror(errno));
    return 0;
}
