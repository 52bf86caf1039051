/* A process that keeps writing its memory while it is migrated, for live-migration tests.
 * `dirtier MIB PAGES_PER_MS` fills MIB MiB, prints "ready", then, step after step, writes
 * one word in each of PAGES_PER_MS pages spread over the heap (a deterministic function of
 * the step) and sleeps 1 ms, until a line arrives on stdin; then it prints the steps done
 * and a checksum of every word. `dirtier MIB PAGES_PER_MS --replay STEPS` does exactly
 * STEPS steps without waiting and prints the same line, so a moved run can be checked
 * against a run that never moved, whatever its step count. */
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], 0, 10) : 1, words = (mib << 20) / 8, pages = words / 512;
    size_t per = argc > 2 ? strtoul(argv[2], 0, 10) : 16;
    long replay = argc > 4 && !strcmp(argv[3], "--replay") ? atol(argv[4]) : -1;
    uint64_t *p = malloc(words * 8), x = 88172645463325252ULL, sum = 0;
    if (!p) { printf("out of memory\n"); return 1; }
    for (size_t i = 0; i < words; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; p[i] = x; }
    if (replay < 0) { printf("ready\n"); fflush(stdout); }
    uint64_t step = 0, at = 0;
    for (;;) {
        if (replay >= 0 && step == (uint64_t)replay) break;
        for (size_t j = 0; j < per; j++) {
            at = (at + 7919) % pages;
            p[at * 512 + (step + j) % 512] ^= step * 2654435761u + j + 1;
        }
        step++;
        if (replay < 0) {
            struct pollfd in = { 0, POLLIN, 0 };
            if (poll(&in, 1, 1) > 0) break;
        }
    }
    for (size_t i = 0; i < words; i++) sum = sum * 1099511628211ull + p[i];
    printf("steps %llu sum %llu\n", (unsigned long long)step, (unsigned long long)sum);
    return 0;
}
