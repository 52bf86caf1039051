/* A memfd (memfd_create) with data, read partly through one fd and dup'ed: after
 * sync point 1 its name, contents, offset and the dup's shared offset are the same. */
#include "common.h"
#include <sys/mman.h>

int main(void)
{
    int m = memfd_create("mos-test-memfd", MFD_CLOEXEC);
    if (m < 0) { perror("memfd_create"); return 1; }
    char data[8192];
    for (int i = 0; i < (int)sizeof data; i++) data[i] = (char)('a' + i % 26);
    if (write(m, data, sizeof data) != sizeof data) return 2;
    lseek(m, 100, SEEK_SET);
    int d = dup(m);
    printf("memfd ready\n");
    fflush(stdout);
    mos_sync(1);
    char name[256] = "", path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", m);
    ssize_t n = readlink(path, name, sizeof name - 1);
    if (n > 0) name[n] = 0;
    char b[10] = "";
    ssize_t r = read(d, b, 9);
    off_t here = lseek(m, 0, SEEK_CUR);
    struct stat st;
    fstat(m, &st);
    printf("memfd %s size %lld read '%.*s' shared offset %lld\n", name, (long long)st.st_size, (int)(r > 0 ? r : 0), b, (long long)here);
    return 0;
}
