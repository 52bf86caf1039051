/* Benchmark subject for forwarded file reads: opens FILE (before any migration), prints
 * "ready", then waits for a file named "go" in its cwd (after migration that stat is itself
 * forwarded). Then it runs one pass per command line on stdin, so the bench can interleave
 * its baselines with the passes:
 *   "pread" -> N x pread(4 KiB) at random aligned offsets; prints "pread_us US_PER_CALL"
 *   "seq"   -> reads the whole file in 1 MiB read() calls; prints "seq_mbps MB_PER_S"
 * and on end of input prints "done CHECKSUM". Usage: remote_read FILE N */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static char buf[1 << 20];

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    long n = strtol(argv[2], 0, 10);
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) { perror("open"); return 1; }
    struct stat st;
    if (fstat(fd, &st) < 0) { perror("fstat"); return 1; }
    uint64_t pages = (uint64_t)st.st_size / 4096;
    printf("ready\n");
    fflush(stdout);
    struct stat g;
    while (stat("go", &g) != 0) usleep(5000);

    uint64_t x = 88172645463325252ULL, sum = 0;
    char cmd[32];
    while (fgets(cmd, sizeof cmd, stdin)) {
        if (strcmp(cmd, "pread\n") == 0) {
            double t = now_s();
            for (long i = 0; i < n; i++) {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                ssize_t r = pread(fd, buf, 4096, (off_t)((x % pages) * 4096));
                if (r != 4096) { fprintf(stderr, "pread: %zd\n", r); return 1; }
                sum += (unsigned char)buf[r - 1];
            }
            printf("pread_us %.3f\n", (now_s() - t) * 1e6 / n);
        } else if (strcmp(cmd, "seq\n") == 0) {
            if (lseek(fd, 0, SEEK_SET) != 0) { perror("lseek"); return 1; }
            double t = now_s();
            uint64_t total = 0;
            for (;;) {
                ssize_t r = read(fd, buf, sizeof buf);
                if (r < 0) { perror("read"); return 1; }
                if (r == 0) break;
                total += (uint64_t)r;
                sum += (unsigned char)buf[r - 1];
            }
            double s = now_s() - t;
            if (total != (uint64_t)st.st_size) { fprintf(stderr, "short read: %llu\n", (unsigned long long)total); return 1; }
            printf("seq_mbps %.1f\n", total / s / 1e6);
        } else {
            fprintf(stderr, "unknown command %s", cmd);
            return 1;
        }
        fflush(stdout);
    }
    printf("done %llu\n", (unsigned long long)sum);
    fflush(stdout);
    return 0;
}
