/* Benchmark subject: fills N MiB of heap with pseudo-random data, reports "ready",
 * then waits for a line on stdin; after it, prints CLOCK_REALTIME in ns and a checksum. */
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoul(argv[1], 0, 10) : 1;
    size_t n = mib << 20;
    uint64_t *p = malloc(n);
    uint64_t x = 88172645463325252ULL, sum = 0;
    for (size_t i = 0; i < n / 8; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; p[i] = x; }
    printf("ready\n"); fflush(stdout);
    char line[16];
    if (read(0, line, sizeof line) <= 0) return 1;
    struct timespec ts; clock_gettime(CLOCK_REALTIME, &ts);
    long long now = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    for (size_t i = 0; i < n / 8; i += 512) sum += p[i];
    printf("resumed %lld %llu\n", now, (unsigned long long)sum); fflush(stdout);
    return 0;
}
