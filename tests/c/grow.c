/* Memory that grows, for the ushering tests: `grow SEED MIB STEP_MS` touches one more
 * MiB (a pattern of SEED) every STEP_MS ms up to MIB, then checks every byte it wrote
 * and prints the checksum, a pure function of SEED and MIB, so a moved run's output
 * equals an uninterrupted one's. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int main(int argc, char **argv)
{
    if (argc < 4) { fprintf(stderr, "usage: grow SEED MIB STEP_MS\n"); return 2; }
    unsigned seed = atoi(argv[1]);
    int mib = atoi(argv[2]);
    long step = atol(argv[3]);
    unsigned char **chunk = calloc(mib, sizeof *chunk);
    for (int i = 0; i < mib; i++) {
        chunk[i] = malloc(1 << 20);
        if (!chunk[i]) { printf("grow %u: out of memory at %d MiB\n", seed, i); return 1; }
        for (int j = 0; j < (1 << 20); j++) chunk[i][j] = (unsigned char)(seed * 31 + i * 7 + j);
        if ((i + 1) % 100 == 0) { printf("grow %u: %d MiB\n", seed, i + 1); fflush(stdout); }
        struct timespec ts = { step / 1000, (step % 1000) * 1000000L };
        nanosleep(&ts, NULL);
    }
    uint64_t sum = 0;
    for (int i = 0; i < mib; i++)
        for (int j = 0; j < (1 << 20); j++) {
            if (chunk[i][j] != (unsigned char)(seed * 31 + i * 7 + j)) { printf("grow %u: wrong byte at %d MiB + %d\n", seed, i, j); return 1; }
            sum = sum * 1099511628211ull + chunk[i][j];
        }
    printf("grow %u done: %d MiB, %016llx\n", seed, mib, (unsigned long long)sum);
    return 0;
}
