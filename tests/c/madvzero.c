/* madvise on memory written before sync point 1, after it: with a lazy restart big runs
 * of it are mapped from the image file, where MADV_DONTNEED would give the old bytes
 * back (allocators rely on zeros) and MADV_FREE would fail. Each mode's result and the
 * contents it leaves are printed; they must be as in an uninterrupted run. */
#include "common.h"
#include <sys/mman.h>

#define MB (1024 * 1024)
static const struct { const char *name; int advice; int zeroes; } modes[] = {
    { "DONTNEED", MADV_DONTNEED, 1 }, { "FREE", MADV_FREE, -1 }, { "WILLNEED", MADV_WILLNEED, 0 }, { "SEQUENTIAL", MADV_SEQUENTIAL, 0 },
    { "RANDOM", MADV_RANDOM, 0 }, { "NORMAL", MADV_NORMAL, 0 }, { "COLD", MADV_COLD, 0 }, { "PAGEOUT", MADV_PAGEOUT, 0 },
    { "HUGEPAGE", MADV_HUGEPAGE, 0 }, { "NOHUGEPAGE", MADV_NOHUGEPAGE, 0 }, { "DONTFORK", MADV_DONTFORK, 0 }, { "DOFORK", MADV_DOFORK, 0 },
    { "DONTDUMP", MADV_DONTDUMP, 0 }, { "DODUMP", MADV_DODUMP, 0 }, { "REMOVE", MADV_REMOVE, 0 },
    { "WIPEONFORK", MADV_WIPEONFORK, 0 }, { "KEEPONFORK", MADV_KEEPONFORK, 0 }, { "MERGEABLE", MADV_MERGEABLE, 0 },
    { "UNMERGEABLE", MADV_UNMERGEABLE, 0 }, { "POPULATE_READ", MADV_POPULATE_READ, 0 }, { "POPULATE_WRITE", MADV_POPULATE_WRITE, 0 },
};
#define N (sizeof modes / sizeof modes[0])

int main(void)
{
    char *m = mmap(NULL, N * MB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (size_t i = 0; i < N * MB; i++)
        m[i] = (char)(1 + i % 251);
    printf("before: written\n");
    fflush(stdout);
    mos_sync(1);
    for (size_t k = 0; k < N; k++) {
        char *p = m + k * MB;
        int r = madvise(p, MB, modes[k].advice);
        int e = r ? errno : 0;
        size_t zero = 0, kept = 0;
        for (size_t i = 0; i < MB; i++) {
            zero += p[i] == 0;
            kept += p[i] == (char)(1 + (k * MB + i) % 251);
        }
        const char *c = zero == MB ? "zeros" : kept == MB ? "kept" : "MIXED";
        /* MADV_FREE may leave either */
        if (modes[k].zeroes < 0 && (zero == MB || kept == MB))
            c = "zeros or kept";
        printf("%s: %s, %s\n", modes[k].name, r == 0 ? "ok" : e == EINVAL ? "EINVAL" : "error", c);
    }
    /* the discarded range is usable memory again */
    memset(m, 7, MB);
    printf("reused: %s\n", m[MB - 1] == 7 ? "ok" : "FAILED");
    return 0;
}
