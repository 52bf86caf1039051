/* The coverage matrix of forwarded calls. Opens before.txt and map.txt (which the test
 * created) before mos_sync(1), where the test migrates it; then runs every row and prints
 * "ROW <name> ok", "ROW <name> refused <errno name>" (a clear refusal), or
 * "ROW <name> FAIL <what>". Everything happens in the cwd, which is at home. */
#include "common.h"
#include <dirent.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/ioctl.h>
#include <termios.h>

static int fails;
#define ROW_OK(name) printf("ROW %s ok\n", name)
#define FAIL(name, what) do { printf("ROW %s FAIL %s (%s)\n", name, what, strerror(errno)); fails++; return; } while (0)
/* errno is cleared first: a check that fails although every call in it succeeded says
 * "Success", not the errno an earlier call left behind */
#define CHECK(name, cond, what) do { errno = 0; if (!(cond)) FAIL(name, what); } while (0)

static int before_fd, map_fd, was_tty;
static char tty_name[256];

static void row_rw(void)
{
    const char *r = "read_write";
    int fd = open("m_rw.txt", O_RDWR | O_CREAT | O_TRUNC, 0644);
    CHECK(r, fd >= 0, "open");
    CHECK(r, write(fd, "abcdef", 6) == 6, "write");
    CHECK(r, lseek(fd, 0, SEEK_SET) == 0, "lseek");
    char b[8] = { 0 };
    CHECK(r, read(fd, b, 6) == 6 && memcmp(b, "abcdef", 6) == 0, "read back");
    close(fd);
    /* a file opened at home before the migration */
    CHECK(r, lseek(before_fd, 0, SEEK_END) == 7, "lseek SEEK_END on pre-migration fd");
    CHECK(r, write(before_fd, "after\n", 6) == 6, "write to pre-migration fd");
    CHECK(r, lseek(before_fd, 0, SEEK_SET) == 0, "lseek pre-migration fd");
    char c[64] = { 0 };
    CHECK(r, read(before_fd, c, sizeof c - 1) == 13 && strcmp(c, "before\nafter\n") == 0, "read pre-migration fd");
    ROW_OK(r);
}

static void row_fd_paths(void)
{
    /* names of the process's own fds: /proc/self/fd/N, /dev/fd/N, /dev/stdout */
    const char *r = "fd_paths";
    char p[64], link[4096] = { 0 }, c[64] = { 0 };
    snprintf(p, sizeof p, "/proc/self/fd/%d", before_fd);
    ssize_t n = readlink(p, link, sizeof link - 1);
    CHECK(r, n > 11 && strcmp(link + n - 11, "/before.txt") == 0, "readlink /proc/self/fd/N of a pre-migration fd");
    snprintf(p, sizeof p, "/dev/fd/%d", before_fd);
    int fd = open(p, O_RDONLY);
    CHECK(r, fd >= 0, "open /dev/fd/N of a pre-migration fd");
    CHECK(r, read(fd, c, sizeof c - 1) == 13 && strcmp(c, "before\nafter\n") == 0, "read the reopened file from its start");
    close(fd);
    struct stat a, b;
    CHECK(r, stat("/dev/stdout", &a) == 0 && fstat(1, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev, "stat /dev/stdout is fstat(1)");
    /* a symlink's target is text, kept as given */
    unlink("m_link");
    memset(link, 0, sizeof link);
    CHECK(r, symlink("/dev/stdin", "m_link") == 0 && readlink("m_link", link, sizeof link - 1) == 10 && strcmp(link, "/dev/stdin") == 0, "symlink to /dev/stdin keeps its text");
    ROW_OK(r);
}

static void row_pread(void)
{
    const char *r = "pread_pwrite";
    int fd = open("m_p.txt", O_RDWR | O_CREAT | O_TRUNC, 0644);
    CHECK(r, fd >= 0, "open");
    CHECK(r, pwrite(fd, "XYZ", 3, 100) == 3, "pwrite");
    char b[4] = { 0 };
    CHECK(r, pread(fd, b, 3, 100) == 3 && strcmp(b, "XYZ") == 0, "pread");
    CHECK(r, lseek(fd, 0, SEEK_CUR) == 0, "offset unchanged");
    close(fd);
    ROW_OK(r);
}

static void row_vec(void)
{
    const char *r = "readv_writev";
    int fd = open("m_v.txt", O_RDWR | O_CREAT | O_TRUNC, 0644);
    CHECK(r, fd >= 0, "open");
    struct iovec w[3] = { { "one ", 4 }, { "two ", 4 }, { "three", 5 } };
    CHECK(r, writev(fd, w, 3) == 13, "writev");
    /* the buffers are filled to the brim: compared by length, never as strings */
    char a[5], b[8];
    memset(a, '?', sizeof a);
    memset(b, '?', sizeof b);
    struct iovec v[2] = { { a, 5 }, { b, 8 } };
    CHECK(r, lseek(fd, 0, SEEK_SET) == 0, "lseek");
    CHECK(r, readv(fd, v, 2) == 13 && memcmp(a, "one t", 5) == 0 && memcmp(b, "wo three", 8) == 0, "readv");
    close(fd);
    ROW_OK(r);
}

static void row_stdio(void)
{
    const char *r = "stdio";
    FILE *f = fopen("m_stdio.txt", "w");
    CHECK(r, f != NULL, "fopen w");
    for (int i = 0; i < 2000; i++) fprintf(f, "stdio line %d\n", i);
    CHECK(r, fclose(f) == 0, "fclose");
    f = fopen("m_stdio.txt", "r");
    CHECK(r, f != NULL, "fopen r");
    char line[64];
    int n = 0, last = -1;
    while (fgets(line, sizeof line, f)) { n++; sscanf(line, "stdio line %d", &last); }
    fclose(f);
    CHECK(r, n == 2000 && last == 1999, "lines read back");
    ROW_OK(r);
}

static void row_mmap(void)
{
    const char *r = "mmap_read";
    struct stat st;
    CHECK(r, fstat(map_fd, &st) == 0, "fstat");
    char *p = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, map_fd, 0);
    CHECK(r, p != MAP_FAILED, "mmap");
    CHECK(r, st.st_size == 8192 && p[0] == 'M' && p[4096] == 'N' && p[8191] == 'E', "mapped bytes");
    munmap(p, st.st_size);
    ROW_OK(r);
    const char *s = "mmap_shared_write";
    p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, map_fd, 0);
    /* at home this works; a migrated process is refused (ENODEV) */
    if (p == MAP_FAILED) printf("ROW %s refused %s\n", s, errno == ENODEV ? "ENODEV" : strerror(errno));
    else { printf("ROW %s ok\n", s); munmap(p, 4096); }
}

static void row_meta(void)
{
    const char *r = "fstat_lseek_ftruncate_fsync";
    int fd = open("m_meta.txt", O_RDWR | O_CREAT | O_TRUNC, 0644);
    CHECK(r, fd >= 0, "open");
    CHECK(r, write(fd, "0123456789", 10) == 10, "write");
    struct stat st;
    CHECK(r, fstat(fd, &st) == 0 && st.st_size == 10 && S_ISREG(st.st_mode), "fstat");
    CHECK(r, ftruncate(fd, 3) == 0, "ftruncate");
    CHECK(r, fstat(fd, &st) == 0 && st.st_size == 3, "size after ftruncate");
    CHECK(r, lseek(fd, 0, SEEK_END) == 3, "lseek SEEK_END");
    CHECK(r, fsync(fd) == 0 && fdatasync(fd) == 0, "fsync");
    close(fd);
    ROW_OK(r);
}

static void row_dup(void)
{
    const char *r = "dup_dup2_fcntl";
    int fd = open("m_dup.txt", O_RDWR | O_CREAT | O_TRUNC, 0644);
    CHECK(r, fd >= 0, "open");
    int d = dup(fd);
    CHECK(r, d >= 0 && d != fd, "dup");
    CHECK(r, write(d, "ab", 2) == 2 && lseek(fd, 0, SEEK_CUR) == 2, "shared offset after dup");
    CHECK(r, dup2(fd, 50) == 50, "dup2");
    CHECK(r, write(50, "cd", 2) == 2 && lseek(d, 0, SEEK_CUR) == 4, "shared offset after dup2");
    int fl = fcntl(fd, F_GETFL);
    CHECK(r, fl >= 0 && (fl & O_ACCMODE) == O_RDWR, "F_GETFL");
    int e = fcntl(fd, F_DUPFD, 60);
    CHECK(r, e >= 60, "F_DUPFD");
    CHECK(r, fcntl(fd, F_SETFD, FD_CLOEXEC) == 0 && fcntl(fd, F_GETFD) == FD_CLOEXEC && fcntl(d, F_GETFD) == 0, "F_SETFD/F_GETFD per fd");
    CHECK(r, lseek(fd, 0, SEEK_SET) == 0 && fcntl(fd, F_SETFL, O_APPEND) == 0, "F_SETFL");
    CHECK(r, write(e, "ef", 2) == 2 && lseek(fd, 0, SEEK_CUR) == 6, "O_APPEND write");
    struct flock lk = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1 };
    CHECK(r, fcntl(fd, F_SETLK, &lk) == 0, "F_SETLK");
    close(e);
    close(50);
    close(d);
    close(fd);
    char b[8] = { 0 };
    fd = open("m_dup.txt", O_RDONLY);
    CHECK(r, read(fd, b, 8) == 6 && strcmp(b, "abcdef") == 0, "content");
    close(fd);
    ROW_OK(r);
}

static void row_poll(void)
{
    const char *r = "poll_select";
    /* stdin is a pipe at home; the test wrote "x\n" into it before the migration */
    struct pollfd p[2] = { { 0, POLLIN, 0 }, { -1, 0, 0 } };
    CHECK(r, poll(p, 1, 5000) == 1 && (p[0].revents & POLLIN), "poll on a forwarded pipe");
    fd_set rs;
    FD_ZERO(&rs);
    FD_SET(0, &rs);
    struct timeval tv = { 5, 0 };
    CHECK(r, select(1, &rs, NULL, NULL, &tv) == 1 && FD_ISSET(0, &rs), "select on a forwarded pipe");
    int ev = eventfd(1, 0);
    CHECK(r, ev >= 0, "eventfd");
    int f = open("m_poll.txt", O_RDWR | O_CREAT | O_TRUNC, 0644);
    struct pollfd q[2] = { { ev, POLLIN, 0 }, { f, POLLOUT, 0 } };
    CHECK(r, poll(q, 2, 5000) == 2 && (q[0].revents & POLLIN) && (q[1].revents & POLLOUT), "poll on a local and a forwarded fd");
    close(ev);
    close(f);
    char c[4] = { 0 };
    CHECK(r, read(0, c, 2) == 2 && c[0] == 'x', "read stdin");
    ROW_OK(r);
}

static void row_dirs(void)
{
    const char *r = "getdents_paths";
    CHECK(r, mkdir("m_dir", 0755) == 0, "mkdir");
    for (int i = 0; i < 3; i++) {
        char p[64];
        snprintf(p, sizeof p, "m_dir/f%d", i);
        int fd = creat(p, 0644);
        CHECK(r, fd >= 0, "creat");
        close(fd);
    }
    DIR *d = opendir("m_dir");
    CHECK(r, d != NULL, "opendir");
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) if (e->d_name[0] != '.') n++;
    closedir(d);
    CHECK(r, n == 3, "readdir count");
    struct stat st;
    CHECK(r, stat("m_dir/f1", &st) == 0 && access("m_dir/f1", W_OK) == 0, "stat/access");
    CHECK(r, rename("m_dir/f1", "m_dir/g1") == 0 && access("m_dir/f1", F_OK) != 0, "rename");
    CHECK(r, symlink("g1", "m_dir/link") == 0, "symlink");
    char l[32] = { 0 };
    CHECK(r, readlink("m_dir/link", l, sizeof l) == 2 && strcmp(l, "g1") == 0, "readlink");
    CHECK(r, lstat("m_dir/link", &st) == 0 && S_ISLNK(st.st_mode), "lstat");
    char before[4096], inside[4096];
    CHECK(r, getcwd(before, sizeof before) != NULL, "getcwd");
    CHECK(r, chdir("m_dir") == 0 && getcwd(inside, sizeof inside) && strstr(inside, "/m_dir"), "chdir");
    CHECK(r, unlink("link") == 0 && unlink("g1") == 0 && unlink("f0") == 0 && unlink("f2") == 0, "unlink");
    CHECK(r, chdir(before) == 0 && rmdir("m_dir") == 0, "rmdir");
    ROW_OK(r);
}

static void row_raw(void)
{
    const char *r = "raw_syscall";
    int fd = syscall(SYS_openat, AT_FDCWD, "m_raw.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(r, fd >= 0, "SYS_openat");
    CHECK(r, syscall(SYS_write, fd, "raw\n", 4) == 4, "SYS_write");
    CHECK(r, syscall(SYS_close, fd) == 0, "SYS_close");
    struct stat st;
    CHECK(r, syscall(SYS_newfstatat, AT_FDCWD, "m_raw.txt", &st, 0) == 0 && st.st_size == 4, "SYS_newfstatat");
    ROW_OK(r);
}

static void row_tty(void)
{
    /* stdin is a pipe or, under script(1), a terminal at home: still the same after */
    const char *r = "tty";
    CHECK(r, isatty(0) == was_tty, "isatty(0) changed");
    if (was_tty) {
        struct termios t;
        struct winsize w;
        CHECK(r, tcgetattr(0, &t) == 0, "tcgetattr");
        CHECK(r, ioctl(0, TIOCGWINSZ, &w) == 0, "TIOCGWINSZ");
        CHECK(r, tcsetattr(0, TCSANOW, &t) == 0, "tcsetattr");
        const char *now = ttyname(0);
        if (!now || strcmp(now, tty_name) != 0)
            printf("ttyname(0) is %s, was %s\n", now ? now : strerror(errno), tty_name);
        CHECK(r, now && strcmp(now, tty_name) == 0, "ttyname(0) changed");
    }
    ROW_OK(r);
}

static void row_large(void)
{
    /* large reads (the shadowd splices them) : content, short reads at the end of the
     * file, the file offset read() advances and pread() leaves alone */
    const char *r = "large_read";
    enum { SZ = (3 << 20) + 123, CH = 1 << 20 };
    static unsigned char pat[SZ], got[CH];
    for (size_t i = 0; i < SZ; i++) pat[i] = (unsigned char)(i * 2654435761u >> 13);
    int fd = open("m_large.bin", O_RDWR | O_CREAT | O_TRUNC, 0644);
    CHECK(r, fd >= 0, "open");
    CHECK(r, write(fd, pat, SZ) == SZ, "write 3 MiB");
    CHECK(r, lseek(fd, 0, SEEK_SET) == 0, "lseek");
    size_t at = 0;
    for (;;) {
        ssize_t n = read(fd, got, CH);
        CHECK(r, n >= 0, "read 1 MiB");
        if (n == 0) break;
        CHECK(r, (size_t)n == (SZ - at < CH ? SZ - at : CH), "read length");
        CHECK(r, memcmp(got, pat + at, n) == 0, "read content");
        at += n;
        CHECK(r, lseek(fd, 0, SEEK_CUR) == (off_t)at, "offset after read");
    }
    CHECK(r, at == SZ, "read total");
    CHECK(r, pread(fd, got, 256 << 10, CH + 7) == 256 << 10 && memcmp(got, pat + CH + 7, 256 << 10) == 0, "pread 256 KiB");
    CHECK(r, pread(fd, got, CH, SZ - 100) == 100 && memcmp(got, pat + SZ - 100, 100) == 0, "pread past the end");
    CHECK(r, lseek(fd, 0, SEEK_CUR) == (off_t)SZ, "offset unchanged by pread");
    CHECK(r, lseek(fd, 5, SEEK_SET) == 5 && read(fd, got, CH) == CH && memcmp(got, pat + 5, CH) == 0, "read from 5");
    close(fd);
    fd = open("m_large.bin", O_WRONLY);
    CHECK(r, fd >= 0 && read(fd, got, CH) < 0 && errno == EBADF, "read of a write-only fd fails with EBADF");
    close(fd);
    ROW_OK(r);
}

static void row_answers(void)
{
    /* every forwarded call gets its own answer: error answers, spliced large reads and
     * small vectored reads one after the other on the same channel, each result checked
     * exactly (length, bytes, errno) */
    const char *r = "answers_follow_calls";
    enum { BIG = 1 << 20 };
    static unsigned char big[BIG + 4096], got[BIG];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (unsigned char)(i * 40503u >> 7);
    int fd = open("m_ans.bin", O_RDWR | O_CREAT | O_TRUNC, 0644);
    CHECK(r, fd >= 0, "open");
    CHECK(r, write(fd, big, sizeof big) == (ssize_t)sizeof big, "write");
    int wo = open("m_ans.bin", O_WRONLY);
    CHECK(r, wo >= 0, "open write-only");
    for (int round = 0; round < 3; round++) {
        char a[3], b[4];
        struct iovec v[2] = { { a, 3 }, { b, 4 } };
        /* an error answer (a large read, the spliced path), then a vectored read */
        CHECK(r, read(wo, got, BIG) == -1 && errno == EBADF, "large read of a write-only fd: EBADF");
        CHECK(r, preadv(fd, v, 2, 10 + round) == 7 && memcmp(a, big + 10 + round, 3) == 0 && memcmp(b, big + 13 + round, 4) == 0, "preadv after an error answer");
        /* a small error answer, then a vectored read at the file offset */
        CHECK(r, read(wo, got, 16) == -1 && errno == EBADF, "small read of a write-only fd: EBADF");
        CHECK(r, lseek(fd, 100 + round, SEEK_SET) == 100 + round, "lseek");
        CHECK(r, readv(fd, v, 2) == 7 && memcmp(a, big + 100 + round, 3) == 0 && memcmp(b, big + 103 + round, 4) == 0, "readv after an error answer");
        /* a spliced large read, then a small vectored read */
        CHECK(r, pread(fd, got, BIG, 4096) == BIG && memcmp(got, big + 4096, BIG) == 0, "spliced pread");
        CHECK(r, readv(fd, v, 2) == 7 && memcmp(a, big + 107 + round, 3) == 0 && memcmp(b, big + 110 + round, 4) == 0, "readv after a spliced read");
        CHECK(r, lseek(fd, 0, SEEK_SET) == 0 && read(fd, got, BIG) == BIG && memcmp(got, big, BIG) == 0, "spliced read");
        CHECK(r, readv(fd, v, 2) == 7 && memcmp(a, big + BIG, 3) == 0 && memcmp(b, big + BIG + 3, 4) == 0, "readv after a spliced read at the offset it left");
        /* an error answer with no data at all, then a read of the end of the file */
        CHECK(r, access("m_ans.missing", F_OK) == -1 && errno == ENOENT, "access of a missing file: ENOENT");
        CHECK(r, pread(fd, got, 64, sizeof big - 5) == 5 && memcmp(got, big + sizeof big - 5, 5) == 0, "short pread at the end");
    }
    close(wo);
    close(fd);
    ROW_OK(r);
}

int main(void)
{
    before_fd = open("before.txt", O_RDWR);
    map_fd = open("map.txt", O_RDWR);
    was_tty = isatty(0);
    if (was_tty && ttyname_r(0, tty_name, sizeof tty_name) != 0) { perror("ttyname_r"); return 90; }
    if (before_fd < 0 || map_fd < 0) { perror("open"); return 90; }
    mos_sync(1);
    row_rw();
    row_pread();
    row_fd_paths();
    row_large();
    row_answers();
    row_vec();
    row_stdio();
    row_mmap();
    row_meta();
    row_dup();
    row_poll();
    row_dirs();
    row_raw();
    row_tty();
    printf("tty: %s\n", was_tty ? "yes" : "no");
    printf("MATRIX DONE fails=%d\n", fails);
    return fails ? 1 : 0;
}
