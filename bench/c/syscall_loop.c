/* Benchmark subject for the shim's overhead at home: ITERS iterations of a cheap syscall
 * mix (getppid via syscall(), 1-byte read from /dev/zero, 1-byte write to /dev/null,
 * fstat), timed with clock_gettime (vDSO, not a syscall). Prints ns per iteration.
 * With a second argument "thread" it first starts one idle thread: the shim's manager
 * thread makes every process multi-threaded, and the kernel's fd lookup (fdget) then takes
 * file references atomically, which read/write/fstat pay for with or without the shim.
 * Usage: syscall_loop ITERS [thread] */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static void *idle(void *arg) {
    (void)arg;
    for (;;) pause();
    return 0;
}

int main(int argc, char **argv) {
    long iters = argc > 1 ? strtol(argv[1], 0, 10) : 2000000;
    if (argc > 2 && strcmp(argv[2], "thread") == 0) {
        pthread_t t;
        if (pthread_create(&t, 0, idle, 0) != 0) return 1;
    }
    int z = open("/dev/zero", O_RDONLY), nul = open("/dev/null", O_WRONLY);
    if (z < 0 || nul < 0) { perror("open"); return 1; }
    char c = 0;
    long acc = 0;
    struct stat st;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < iters; i++) {
        acc += syscall(SYS_getppid);
        acc += read(z, &c, 1);
        acc += write(nul, &c, 1);
        acc += fstat(z, &st);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / iters;
    printf("ns_per_iter %.2f %ld\n", ns, acc);
    return 0;
}
