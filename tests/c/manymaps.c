/* Thousands of small mappings (allocators, JITs and runtimes make them): `manymaps N`
 * maps N single pages, alternating read-only and read-write so that none merge, writes
 * each writable one, and checks them all after sync point 1. */
#include "common.h"
#include <sys/mman.h>

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 30000;
    char **p = malloc(n * sizeof *p);
    for (int i = 0; i < n; i++) {
        p[i] = mmap(0, 4096, (i & 1) ? PROT_READ | PROT_WRITE : PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p[i] == MAP_FAILED) { perror("mmap"); return 1; }
        if (i & 1) p[i][0] = (char)(i * 7);
    }
    printf("%d mappings\n", n);
    fflush(stdout);
    mos_sync(1);
    long bad = 0;
    for (int i = 1; i < n; i += 2) bad += p[i][0] != (char)(i * 7);
    printf("mappings ok? %s (%ld bad)\n", bad ? "no" : "yes", bad);
    return 0;
}
