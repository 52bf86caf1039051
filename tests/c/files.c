/* Process state across a checkpoint: regular file fds (numbers, O_APPEND vs
 * plain, offsets, read position), cwd after chdir, umask, rlimits, signal
 * dispositions (handler, SIG_IGN), blocked mask and itimers.
 *
 * Expects input.txt in the start cwd (created by the test).
 * Sync points: 1 = checkpoint, 2 = test sends SIGUSR1 and SIGHUP.
 */
#include "common.h"
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>

static volatile sig_atomic_t usr1_count;
static void on_usr1(int sig) { (void)sig; usr1_count++; }
static void on_alrm(int sig) { (void)sig; }

#define LOG_FD 7
#define DATA_FD 42
#define OUT_FD 5
#define IN_FD 9

static void place(int fd, int want)
{
    if (fd != want) {
        if (dup2(fd, want) < 0) { perror("dup2"); exit(1); }
        close(fd);
    }
}

static int flags_of(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fl & (O_ACCMODE | O_APPEND);
}

int main(void)
{
    char buf[64];
    /* files opened relative to the start cwd, moved to fixed fd numbers */
    place(open("log.txt", O_WRONLY | O_CREAT | O_APPEND, 0644), LOG_FD);
    place(open("data.bin", O_RDWR | O_CREAT | O_TRUNC, 0644), DATA_FD);
    place(open("out.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644), OUT_FD);
    place(open("input.txt", O_RDONLY), IN_FD);

    if (write(LOG_FD, "log before\n", 11) != 11) return 1;
    char block[1000];
    for (int i = 0; i < 1000; i++) block[i] = (char)('a' + i % 26);
    if (write(DATA_FD, block, sizeof block) != (ssize_t)sizeof block) return 1;
    lseek(DATA_FD, 500, SEEK_SET);
    if (write(OUT_FD, "out part 1\n", 11) != 11) return 1;
    if (read(IN_FD, buf, 10) != 10) return 1;
    printf("read before: %.10s\n", buf);

    /* cwd, umask, rlimits */
    mkdir("sub", 0755);
    if (chdir("sub") != 0) { perror("chdir"); return 1; }
    char cwd_before[4096];
    if (!getcwd(cwd_before, sizeof cwd_before)) return 1;
    umask(027);

    struct rlimit nofile, core;
    getrlimit(RLIMIT_NOFILE, &nofile);
    rlim_t nofile_hard = nofile.rlim_max;
    nofile.rlim_cur = 200;
    if (setrlimit(RLIMIT_NOFILE, &nofile) != 0) perror("setrlimit nofile");
    getrlimit(RLIMIT_CORE, &core);
    rlim_t core_want = core.rlim_max == RLIM_INFINITY || core.rlim_max > 12345 * 4096 ? 12345 * 4096 : 0;
    rlim_t core_hard = core.rlim_max;
    core.rlim_cur = core_want;
    if (setrlimit(RLIMIT_CORE, &core) != 0) perror("setrlimit core");

    /* signals */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigset_t blk;
    sigemptyset(&blk);
    sigaddset(&blk, SIGHUP);
    sigprocmask(SIG_BLOCK, &blk, NULL);

    signal(SIGALRM, on_alrm);
    struct itimerval it = { { 3600, 0 }, { 3600, 0 } };
    setitimer(ITIMER_REAL, &it, NULL);

    printf("setup done\n");
    mos_sync(1);
    printf("after checkpoint point\n");

    /* fds */
    printf("fd %d flags %s\n", LOG_FD, flags_of(LOG_FD) == (O_WRONLY | O_APPEND) ? "wronly|append" : "WRONG");
    printf("fd %d flags %s\n", DATA_FD, flags_of(DATA_FD) == O_RDWR ? "rdwr" : "WRONG");
    printf("fd %d flags %s\n", OUT_FD, flags_of(OUT_FD) == O_WRONLY ? "wronly" : "WRONG");
    printf("fd %d flags %s\n", IN_FD, flags_of(IN_FD) == O_RDONLY ? "rdonly" : "WRONG");
    printf("data offset %ld\n", (long)lseek(DATA_FD, 0, SEEK_CUR));
    printf("out offset %ld\n", (long)lseek(OUT_FD, 0, SEEK_CUR));
    printf("in offset %ld\n", (long)lseek(IN_FD, 0, SEEK_CUR));
    if (write(LOG_FD, "log after\n", 10) != 10) printf("log write failed\n");
    if (write(DATA_FD, "XYZ", 3) != 3) printf("data write failed\n");
    printf("data offset after write %ld\n", (long)lseek(DATA_FD, 0, SEEK_CUR));
    if (write(OUT_FD, "out part 2\n", 11) != 11) printf("out write failed\n");
    memset(buf, 0, sizeof buf);
    if (read(IN_FD, buf, 10) != 10) printf("input read failed\n");
    printf("read after: %.10s\n", buf);
    int probe = open("/dev/null", O_RDONLY);
    printf("lowest free fd %d\n", probe);
    close(probe);

    /* cwd */
    char cwd_after[4096];
    if (!getcwd(cwd_after, sizeof cwd_after)) strcpy(cwd_after, "?");
    printf("cwd same %d ends with /sub %d\n", strcmp(cwd_before, cwd_after) == 0,
           strlen(cwd_after) > 4 && strcmp(cwd_after + strlen(cwd_after) - 4, "/sub") == 0);
    int rel = open("created-after.txt", O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (rel >= 0) {
        struct stat st;
        fstat(rel, &st);
        printf("new file mode %03o\n", st.st_mode & 0777);
        close(rel);
    }

    /* umask */
    mode_t m = umask(0);
    umask(m);
    printf("umask %03o\n", m);

    /* rlimits */
    getrlimit(RLIMIT_NOFILE, &nofile);
    printf("nofile soft %ld hard unchanged %d\n", (long)nofile.rlim_cur, nofile.rlim_max == nofile_hard);
    getrlimit(RLIMIT_CORE, &core);
    printf("core soft ok %d hard unchanged %d\n", core.rlim_cur == core_want, core.rlim_max == core_hard);

    /* signal dispositions and mask */
    struct sigaction cur;
    sigaction(SIGUSR1, NULL, &cur);
    printf("usr1 handler installed %d restart flag %d\n", cur.sa_handler == on_usr1, (cur.sa_flags & SA_RESTART) != 0);
    sigaction(SIGPIPE, NULL, &cur);
    printf("sigpipe ignored %d\n", cur.sa_handler == SIG_IGN);
    sigset_t mask;
    sigprocmask(SIG_BLOCK, NULL, &mask);
    printf("sighup blocked %d usr1 blocked %d\n", sigismember(&mask, SIGHUP), sigismember(&mask, SIGUSR1));

    /* itimer */
    struct itimerval got;
    getitimer(ITIMER_REAL, &got);
    printf("itimer armed %d interval %ld\n", got.it_value.tv_sec > 0 && got.it_value.tv_sec <= 3600, (long)got.it_interval.tv_sec);

    /* the test sends SIGUSR1 and SIGHUP while we wait here */
    printf("usr1 count before %d\n", (int)usr1_count);
    mos_sync(2);
    for (int i = 0; i < 5000 && usr1_count == 0; i++)
        mos_nap_ms(2);
    printf("usr1 handler ran %d\n", (int)usr1_count);
    sigset_t pend;
    sigpending(&pend);
    printf("sighup pending %d\n", sigismember(&pend, SIGHUP));
    return 0;
}
