/* Benchmark subject: T threads (busy: mutex + arithmetic, and sleeping) and N MiB of
 * random heap; "ready" on stdout, then waits for a line on stdin like heap.c. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static volatile uint64_t shared;
static void *worker(void *a) {
    long id = (long)a;
    for (;;) {
        if (id % 2) { usleep(1000); continue; }
        uint64_t x = id;
        for (int i = 0; i < 100000; i++) x = x * 6364136223846793005ULL + 1;
        pthread_mutex_lock(&m); shared += x; pthread_mutex_unlock(&m);
    }
    return 0;
}
int main(int argc, char **argv) {
    int t = atoi(argv[1]);
    size_t n = strtoul(argv[2], 0, 10) << 20;
    uint64_t *p = malloc(n), x = 88172645463325252ULL;
    for (size_t i = 0; i < n / 8; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; p[i] = x; }
    pthread_t th;
    for (long i = 0; i < t - 1; i++) pthread_create(&th, 0, worker, (void *)i);
    printf("ready\n"); fflush(stdout);
    char line[16];
    if (read(0, line, sizeof line) <= 0) return 1;
    struct timespec ts; clock_gettime(CLOCK_REALTIME, &ts);
    printf("resumed %lld %d\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec, (int)(p[12345] & 1));
    fflush(stdout);
    _exit(0);
}
