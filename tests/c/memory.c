/* Memory state across a checkpoint: initialized globals, bss, a 1 GiB malloc
 * (one byte touched per MiB), sbrk'ed memory, an anonymous mmap, a stack
 * array, many small malloc blocks, a PROT_READ region and a PROT_NONE page.
 * After the restart everything is verified, /proc/self/maps permissions are
 * checked, and sbrk/malloc/free keep working.
 */
#include "common.h"
#include <stdint.h>
#include <sys/mman.h>

#define MiB (1ul << 20)
#define BIG (1024ul * MiB)
#define NSMALL 200

int g_data[1024] = { [0] = 11, [1] = 22, [511] = 33, [1023] = 99 };
static unsigned char g_bss[MiB];

static unsigned char pat(uintptr_t i, unsigned salt) { return (unsigned char)(i * 2654435761u + salt + (i >> 9)); }

static const char *perms_of(void *addr)
{
    static char perms[8];
    FILE *f = fopen("/proc/self/maps", "r");
    char line[4096];
    strcpy(perms, "none");
    if (!f)
        return "nomaps";
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char p[8];
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, p) == 3 && lo <= (uintptr_t)addr && (uintptr_t)addr < hi) {
            strcpy(perms, p);
            break;
        }
    }
    fclose(f);
    return perms;
}

int main(void)
{
    long pg = sysconf(_SC_PAGESIZE);
    volatile unsigned char stk[65536];
    for (size_t i = 0; i < sizeof stk; i++)
        stk[i] = pat(i, 1);

    g_data[500] = 12345;
    for (size_t i = 0; i < sizeof g_bss; i++)
        g_bss[i] = pat(i, 2);

    unsigned char *big = malloc(BIG);
    if (!big) { printf("malloc 1GiB failed\n"); return 1; }
    for (size_t i = 0; i < BIG / MiB; i++)
        big[i * MiB] = pat(i, 3);
    big[BIG - 1] = 0x5a;

    unsigned char *brk0 = sbrk(65536);
    if (brk0 == (void *)-1) { printf("sbrk failed\n"); return 1; }
    for (size_t i = 0; i < 65536; i++)
        brk0[i] = pat(i, 4);

    size_t msz = 8 * MiB;
    unsigned char *anon = mmap(NULL, msz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (anon == MAP_FAILED) { printf("mmap failed\n"); return 1; }
    for (size_t i = 0; i < msz; i += 64)
        anon[i] = pat(i, 5);

    unsigned char *ro = mmap(NULL, 4 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (long i = 0; i < 4 * pg; i++)
        ro[i] = pat(i, 6);
    mprotect(ro, 4 * pg, PROT_READ);
    unsigned char *none = mmap(NULL, pg, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    unsigned char *small[NSMALL];
    for (int b = 0; b < NSMALL; b++) {
        size_t n = (size_t)(b * 97 % 3000) + 1;
        small[b] = malloc(n);
        for (size_t i = 0; i < n; i++)
            small[b][i] = pat(i, 7 + b);
    }

    printf("setup done: ro %s", perms_of(ro));
    printf(" none %s\n", perms_of(none));
    mos_sync(1);
    printf("after sync\n");

    int ok = 1;
    ok &= g_data[0] == 11 && g_data[1] == 22 && g_data[511] == 33 && g_data[1023] == 99 && g_data[500] == 12345 && g_data[2] == 0;
    printf("globals %s\n", ok ? "ok" : "BAD");

    size_t bad = 0;
    for (size_t i = 0; i < sizeof g_bss; i++) bad += g_bss[i] != pat(i, 2);
    printf("bss %s (%zu bad)\n", bad ? "BAD" : "ok", bad);

    bad = 0;
    for (size_t i = 0; i < BIG / MiB; i++) bad += big[i * MiB] != pat(i, 3);
    bad += big[BIG - 1] != 0x5a;
    bad += big[MiB + 17] != 0; /* untouched memory still reads zero */
    printf("big malloc %s (%zu bad)\n", bad ? "BAD" : "ok", bad);

    bad = 0;
    for (size_t i = 0; i < 65536; i++) bad += brk0[i] != pat(i, 4);
    printf("sbrk region %s (%zu bad)\n", bad ? "BAD" : "ok", bad);

    bad = 0;
    for (size_t i = 0; i < msz; i++) bad += anon[i] != ((i % 64) ? 0 : pat(i, 5));
    printf("anon mmap %s (%zu bad)\n", bad ? "BAD" : "ok", bad);

    bad = 0;
    for (size_t i = 0; i < sizeof stk; i++) bad += stk[i] != pat(i, 1);
    printf("stack %s (%zu bad)\n", bad ? "BAD" : "ok", bad);

    bad = 0;
    for (int b = 0; b < NSMALL; b++) {
        size_t n = (size_t)(b * 97 % 3000) + 1;
        for (size_t i = 0; i < n; i++) bad += small[b][i] != pat(i, 7 + b);
    }
    printf("small blocks %s (%zu bad)\n", bad ? "BAD" : "ok", bad);

    bad = 0;
    for (long i = 0; i < 4 * pg; i++) bad += ro[i] != pat(i, 6);
    printf("readonly content %s (%zu bad)\n", bad ? "BAD" : "ok", bad);
    printf("readonly perms %s\n", perms_of(ro));
    printf("prot_none perms %s\n", perms_of(none));

    /* the allocator and brk keep working after the restart */
    void *b2 = sbrk(4096);
    if (b2 == (void *)-1) {
        printf("sbrk after restart FAILED\n");
    } else {
        memset(b2, 0x77, 4096);
        printf("sbrk after restart ok\n");
    }
    for (int b = 0; b < NSMALL; b += 2)
        free(small[b]);
    free(big);
    bad = 0;
    for (int round = 0; round < 3; round++) {
        void *blk[1000];
        for (int i = 0; i < 1000; i++) {
            size_t n = (size_t)(i * 37 % 5000) + 1;
            blk[i] = malloc(n);
            if (!blk[i]) { bad++; continue; }
            memset(blk[i], i & 0xff, n);
        }
        for (int i = 0; i < 1000; i++) {
            size_t n = (size_t)(i * 37 % 5000) + 1;
            if (blk[i] && ((unsigned char *)blk[i])[n - 1] != (i & 0xff)) bad++;
            free(blk[i]);
        }
    }
    unsigned char *big2 = malloc(64 * MiB);
    if (!big2) bad++;
    else { memset(big2, 1, 64 * MiB); free(big2); }
    for (int b = 1; b < NSMALL; b += 2)
        free(small[b]);
    printf("malloc/free after restart %s\n", bad ? "BAD" : "ok");
    return 0;
}
