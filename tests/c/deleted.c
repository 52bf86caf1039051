/* deleted: a file deleted while open (a common temp-file idiom). Writes a text, unlinks
 * the file, keeps a read-write fd at offset 6 and an O_APPEND dup of another open of it;
 * sync point 1; then reads on from the offset, appends through the O_APPEND fd, and
 * prints what it reads back and whether the fds still name a deleted file. */
#include "common.h"

int main(void) {
    const char *text = "hello deleted world\n";
    int a = open("scratch.tmp", O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (a < 0 || write(a, text, strlen(text)) != (ssize_t)strlen(text)) return 1;
    int b = open("scratch.tmp", O_WRONLY | O_APPEND);
    int c = dup(a);
    if (b < 0 || c < 0 || unlink("scratch.tmp") != 0) return 1;
    lseek(a, 6, SEEK_SET);
    mos_sync(1);
    char buf[64] = {0};
    ssize_t n = read(c, buf, 7); /* shares a's offset */
    printf("read after the offset: %.*s\n", (int)n, buf);
    if (write(b, "appended\n", 9) != 9) return 1;
    char all[128] = {0};
    n = pread(a, all, sizeof all - 1, 0);
    printf("whole file: %.*s", (int)n, all);
    printf("offset now %ld, flags of b %s\n", (long)lseek(a, 0, SEEK_CUR), (fcntl(b, F_GETFL) & O_APPEND) ? "append" : "no-append");
    char link[256] = {0}, p[64];
    snprintf(p, sizeof p, "/proc/self/fd/%d", a);
    ssize_t k = readlink(p, link, sizeof link - 1);
    printf("deleted still: %s\n", k > 0 && strstr(link, "(deleted)") ? "yes" : "no");
    return 0;
}
