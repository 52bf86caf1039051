/* Migration bench subject: `ticker MIB DIRTY_MBS` fills MIB MiB with a pattern, prints
 * "ready", then every 5 ms prints "t NS" (CLOCK_MONOTONIC) while rewriting DIRTY_MBS MB of
 * its heap per second; a line on stdin makes it print "sum X" (every word, a function of
 * what it holds) and exit. The largest gap between two "t" lines is the freeze it saw. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <poll.h>
#include <unistd.h>

static uint64_t now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000000000ull + t.tv_nsec; }

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], 0, 10) : 1, words = (mib << 20) / 8;
    double mbs = argc > 2 ? atof(argv[2]) : 0;
    /* `ticker MIB DIRTY_MBS --replay N`: exactly N ticks, no clock, no waiting: the sum a
     * run that never moved has after N ticks */
    long replay = argc > 4 && argv[3][0] == '-' ? atol(argv[4]) : -1;
    uint64_t *p = malloc(words * 8), x = 88172645463325252ULL;
    if (!p) return 1;
    for (size_t i = 0; i < words; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; p[i] = x; }
    if (replay < 0) { printf("ready\n"); fflush(stdout); }
    size_t at = 0, per_tick = (size_t)(mbs * 1e6 / 200 / 8); /* words per 5 ms */
    uint64_t gen = 1, ticks = 0;
    for (;;) {
        if (replay >= 0 && ticks == (uint64_t)replay) break;
        for (size_t k = 0; k < per_tick; k++) { p[at] ^= gen; if (++at == words) { at = 0; gen++; } }
        ticks++;
        if (replay >= 0) continue;
        printf("t %llu\n", (unsigned long long)now()); fflush(stdout);
        struct pollfd in = { 0, POLLIN, 0 };
        if (poll(&in, 1, 5) > 0) break;
    }
    uint64_t sum = 0;
    for (size_t i = 0; i < words; i++) sum = sum * 1099511628211ull + p[i];
    printf("sum %llu ticks %llu\n", (unsigned long long)sum, (unsigned long long)ticks);
    return 0;
}
