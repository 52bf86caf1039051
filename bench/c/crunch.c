/* CPU-bound work for the balancing tests: `crunch SEED UNITS` does UNITS units of integer
 * work (about 10 ms each on an uncapped cpu of this machine), printing a progress line
 * every 20 units and finally the checksum, a pure function of SEED and UNITS, so a moved
 * run's output equals an uninterrupted one's. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc < 3) { fprintf(stderr, "usage: crunch SEED UNITS\n"); return 2; }
    uint64_t x = strtoull(argv[1], 0, 10) * 0x9E3779B97F4A7C15ull + 1;
    long units = atol(argv[2]);
    for (long u = 0; u < units; u++) {
        for (int i = 0; i < 4000000; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        if ((u + 1) % 20 == 0) { printf("crunch %s: %ld/%ld\n", argv[1], u + 1, units); fflush(stdout); }
    }
    printf("crunch %s done: %016llx\n", argv[1], (unsigned long long)x);
    return 0;
}
