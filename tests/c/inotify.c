/* inotify: watches on a directory and a file, with a gap in their watch descriptors (one
 * removed), relative and absolute paths. After sync point 1 the same wds report the
 * events of new changes. */
#include "common.h"
#include <sys/inotify.h>

static void drain(int in)
{
    char buf[4096] __attribute__((aligned(8)));
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n <= 0) break;
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *e = (struct inotify_event *)p;
            if (!(e->mask & IN_IGNORED))
                printf("event wd %d mask %#x name '%s'\n", e->wd, e->mask & ~IN_ISDIR, e->len ? e->name : "");
            p += sizeof *e + e->len;
        }
    }
}

int main(void)
{
    mkdir("watched", 0755);
    int f = open("watched/file", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    close(f);
    int in = inotify_init1(IN_NONBLOCK);
    int a = inotify_add_watch(in, "watched", IN_CREATE | IN_DELETE);
    int b = inotify_add_watch(in, "watched/file", IN_MODIFY);
    inotify_rm_watch(in, b);
    char abs[4096];
    if (!getcwd(abs, sizeof abs - 32)) return 1;
    strcat(abs, "/watched/file");
    int c = inotify_add_watch(in, abs, IN_MODIFY | IN_CLOSE_WRITE);
    drain(in);
    printf("inotify fd %d wds %d %d\n", in, a, c);
    fflush(stdout);
    mos_sync(1);
    f = open("watched/file", O_WRONLY | O_APPEND);
    if (write(f, "x", 1) != 1) return 2;
    close(f);
    f = open("watched/new", O_WRONLY | O_CREAT, 0644);
    close(f);
    unlink("watched/new");
    drain(in);
    return 0;
}
