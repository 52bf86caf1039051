/* Mappings whose kind of memory matters at restart.
 *   mapflags sharedro   a read-only MAP_SHARED view of a file (as glibc maps
 *                       gconv-modules.cache, xz and iconv users have one) while the
 *                       program holds other files open at low fd numbers
 *   mapflags noreserve  a 2 TiB PROT_NONE MAP_NORESERVE reservation (JITs, Go, sanitizers)
 *                       with 64 MiB of it made writable and touched, and a 1 TiB
 *                       read-write MAP_NORESERVE mapping with a few pages touched
 * Prints what it sees after sync point 1. */
#include "common.h"
#include <stdint.h>
#include <sys/mman.h>

static void perms_of(void *p, char out[5])
{
    FILE *f = fopen("/proc/self/maps", "r");
    char l[512];
    strcpy(out, "????");
    while (f && fgets(l, sizeof l, f)) {
        unsigned long a, b;
        char pr[5];
        if (sscanf(l, "%lx-%lx %4s", &a, &b, pr) == 3 && (unsigned long)p >= a && (unsigned long)p < b) {
            memcpy(out, pr, 5);
            break;
        }
    }
    if (f) fclose(f);
}

static int has_flag(void *p, const char *flag);
static int nr_flag(void *p) { return has_flag(p, " nr"); }

static int has_flag(void *p, const char *flag)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    char l[512];
    int in = 0, nr = -1;
    while (f && fgets(l, sizeof l, f)) {
        unsigned long a, b;
        if (sscanf(l, "%lx-%lx ", &a, &b) == 2 && strchr(l, '-') == l + strcspn(l, "-"))
            in = (unsigned long)p >= a && (unsigned long)p < b;
        else if (in && !strncmp(l, "VmFlags:", 8)) {
            nr = strstr(l, flag) != NULL;
            break;
        }
    }
    if (f) fclose(f);
    return nr;
}

int main(int argc, char **argv)
{
    if (argc < 2) return 64;
    if (!strcmp(argv[1], "sharedro")) {
        const char *path = "mapped.dat";
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
        for (int i = 0; i < 3 * 4096; i++) {
            unsigned char c = (unsigned char)(i * 7 + 3);
            if (write(fd, &c, 1) != 1) return 65;
        }
        close(fd);
        fd = open(path, O_RDONLY);
        unsigned char *m = mmap(0, 3 * 4096, PROT_READ, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) return 66;
        close(fd);
        /* low fd numbers taken by files of other modes */
        int w = open("out.dat", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int w2 = open("out2.dat", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int w3 = open("out3.dat", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int w4 = open("out4.dat", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        printf("fds %d %d %d %d\n", w >= 0, w2 >= 0, w3 >= 0, w4 >= 0);
        fflush(stdout);
        mos_sync(1);
        int bad = 0;
        for (int i = 0; i < 3 * 4096; i++) bad += m[i] != (unsigned char)(i * 7 + 3);
        char p[5];
        perms_of(m, p);
        printf("shared ro mapping %s (%d bad), perms %s\n", bad ? "WRONG" : "ok", bad, p);
        return 0;
    }
    if (!strcmp(argv[1], "noreserve")) {
        size_t big = (size_t)2 << 40, rw = (size_t)1 << 40;
        unsigned char *res = mmap(0, big, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        unsigned char *wr = mmap(0, rw, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (res == MAP_FAILED || wr == MAP_FAILED) { printf("mmap failed\n"); return 66; }
        if (mprotect(res, 64 << 20, PROT_READ | PROT_WRITE)) return 67;
        for (size_t i = 0; i < (64u << 20); i += 4096) res[i] = (unsigned char)(i >> 12);
        for (size_t k = 0; k < 16; k++) wr[k * ((size_t)1 << 36)] = (unsigned char)(k + 1);
        printf("reserved\n");
        fflush(stdout);
        mos_sync(1);
        int bad = 0;
        for (size_t i = 0; i < (64u << 20); i += 4096) bad += res[i] != (unsigned char)(i >> 12);
        for (size_t k = 0; k < 16; k++) bad += wr[k * ((size_t)1 << 36)] != (unsigned char)(k + 1);
        /* more of the reservation can still be committed and used */
        if (mprotect(res + (64 << 20), 64 << 20, PROT_READ | PROT_WRITE)) bad += 1000;
        else res[(64 << 20) + 4096] = 9;
        char p1[5], p2[5];
        perms_of(res + (512u << 20), p1);
        perms_of(wr, p2);
        printf("noreserve %s (%d bad), reservation %s nr=%d, rw %s nr=%d\n", bad ? "WRONG" : "ok", bad, p1, nr_flag(res + (512u << 20)), p2, nr_flag(wr));
        return 0;
    }
    if (!strcmp(argv[1], "advised")) {
        const char *names[] = { " dc", " dd", " wf", " hg", " lo" };
        int adv[] = { MADV_DONTFORK, MADV_DONTDUMP, MADV_WIPEONFORK, MADV_HUGEPAGE, -1 };
        unsigned char *r[5];
        for (int i = 0; i < 5; i++) {
            r[i] = mmap(0, 4 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (r[i] == MAP_FAILED) return 66;
            if (adv[i] >= 0 ? madvise(r[i], 4 << 20, adv[i]) : mlock(r[i], 4096 * 4)) { printf("advice %d refused\n", i); return 67; }
            memset(r[i], i + 1, 4096 * 4);
        }
        printf("advised\n");
        fflush(stdout);
        mos_sync(1);
        int bad = 0;
        for (int i = 0; i < 5; i++)
            for (int k = 0; k < 4096 * 4; k++) bad += r[i][k] != i + 1;
        printf("advised %s (%d bad), flags", bad ? "WRONG" : "ok", bad);
        for (int i = 0; i < 5; i++) printf("%s=%d", names[i], has_flag(r[i], names[i]));
        printf("\n");
        return 0;
    }
    return 64;
}
