/* CPU-bound work for the balancing tests: `crunch SEED UNITS [MIB]` does UNITS units of
 * integer work (about 10 ms each on an uncapped cpu of this machine), printing a progress
 * line every 20 units and finally the checksum, a pure function of SEED and UNITS (and of
 * MIB MiB of memory it fills first and checks at the end), so a moved run's output equals
 * an uninterrupted one's. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc < 3) { fprintf(stderr, "usage: crunch SEED UNITS\n"); return 2; }
    uint64_t x = strtoull(argv[1], 0, 10) * 0x9E3779B97F4A7C15ull + 1;
    long units = atol(argv[2]);
    size_t mem = argc > 3 ? (size_t)atol(argv[3]) << 20 : 0;
    unsigned char *m = mem ? malloc(mem) : 0;
    if (mem && !m) { fprintf(stderr, "crunch: no memory\n"); return 1; }
    for (size_t i = 0; i < mem; i++) m[i] = (unsigned char)(i * 13 + x);
    for (long u = 0; u < units; u++) {
        for (int i = 0; i < 4000000; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        if ((u + 1) % 20 == 0) { printf("crunch %s: %ld/%ld\n", argv[1], u + 1, units); fflush(stdout); }
    }
    for (size_t i = 0; i < mem; i += 4096)
        if (m[i] != (unsigned char)(i * 13 + (strtoull(argv[1], 0, 10) * 0x9E3779B97F4A7C15ull + 1))) { printf("crunch %s: memory changed at %zu\n", argv[1], i); return 1; }
    printf("crunch %s done: %016llx\n", argv[1], (unsigned long long)x);
    return 0;
}
