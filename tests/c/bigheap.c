/* A process with a big heap, for migration tests: `bigheap MIB` fills MIB MiB with a
 * pattern, prints "ready", waits for a line on stdin, then checks every byte and prints
 * a checksum that depends only on MIB (so a moved run's output equals an unmoved one's). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], 0, 10) : 1, n = mib << 20;
    uint64_t *p = malloc(n), x = 88172645463325252ULL, sum = 0;
    if (!p) { printf("out of memory\n"); return 1; }
    for (size_t i = 0; i < n / 8; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; p[i] = x; }
    printf("ready\n"); fflush(stdout);
    char line[16];
    if (read(0, line, sizeof line) <= 0) return 1;
    x = 88172645463325252ULL;
    for (size_t i = 0; i < n / 8; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        if (p[i] != x) { printf("wrong word at %zu\n", i); return 1; }
        sum = sum * 1099511628211ull + p[i];
    }
    printf("sum %llu\n", (unsigned long long)sum);
    return 0;
}
