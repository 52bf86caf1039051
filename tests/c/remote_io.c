/* The migration program: argv[1] ticks, one every 50 ms. Each tick writes "tick I" to
 * stdout, "line I" to out.txt (stdio) and "tI;" to a deleted temp file it holds open.
 * Lines typed on stdin are echoed as "got: ...". After the ticks, and once stdin is at
 * EOF, it prints the temp file's size and tail, creates raw.txt with a raw
 * syscall(SYS_openat) and exits 7. SIGTERM: prints "term" and exits 42. */
#include "common.h"
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>

static volatile sig_atomic_t term;
static void on_term(int s) { (void)s; term = 1; }

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 50;
    signal(SIGTERM, on_term);
    FILE *out = fopen("out.txt", "w");
    char tmpl[] = "/tmp/mos-deleted-XXXXXX";
    int tfd = mkstemp(tmpl);
    if (!out || tfd < 0) { perror("open"); return 90; }
    unlink(tmpl);
    int eof = 0;
    for (int i = 0; i < n || !eof; i++) {
        if (term) { printf("term\n"); fflush(stdout); return 42; }
        if (i < n) {
            printf("tick %d\n", i);
            fflush(stdout);
            fprintf(out, "line %d\n", i);
            fflush(out);
            dprintf(tfd, "t%d;", i);
        }
        struct pollfd p = { 0, POLLIN, 0 };
        if (!eof && poll(&p, 1, 0) > 0) {
            char buf[256];
            ssize_t k = read(0, buf, sizeof buf - 1);
            if (k <= 0) eof = 1;
            else { buf[k] = 0; printf("got: %s", buf); fflush(stdout); }
        }
        mos_nap_ms(50);
    }
    char b[8192];
    lseek(tfd, 0, SEEK_SET);
    ssize_t k = read(tfd, b, sizeof b - 1);
    b[k > 0 ? k : 0] = 0;
    printf("tmp: %zd bytes, ends %s\n", k, k > 6 ? b + k - 6 : b);
    int fd = syscall(SYS_openat, AT_FDCWD, "raw.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, "raw\n", 4) != 4) { perror("raw"); return 91; }
    close(fd);
    fclose(out);
    return 7;
}
