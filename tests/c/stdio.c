/* Buffered stdio across a checkpoint.
 * stdout (a pipe => fully buffered) and stderr (made fully buffered with
 * setvbuf) both hold unflushed data at the sync point, including a partial
 * line.  After the restart the program keeps printing, reads one line from
 * stdin (rebound to the restarting command's stdin) and reports the kind of
 * fds 0..2.
 */
#include "common.h"
#include <sys/stat.h>

static char errbuf[8192];

static const char *kind(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return "closed";
    if (S_ISFIFO(st.st_mode)) return "fifo";
    if (S_ISREG(st.st_mode)) return "regular";
    if (S_ISCHR(st.st_mode)) return "chr";
    if (S_ISSOCK(st.st_mode)) return "socket";
    return "other";
}

int main(void)
{
    setvbuf(stderr, errbuf, _IOFBF, sizeof errbuf);
    for (int i = 0; i < 500; i++) {
        printf("out %04d the quick brown fox jumps over the lazy dog\n", i);
        if (i % 7 == 0)
            fprintf(stderr, "err %04d pack my box with five dozen liquor jugs\n", i);
    }
    printf("partial stdout line, ");
    fprintf(stderr, "partial stderr line, ");
    mos_sync(1);
    printf("continued after sync\n");
    fprintf(stderr, "continued after sync\n");

    char line[256];
    if (fgets(line, sizeof line, stdin))
        printf("stdin: %s", line);
    else
        printf("stdin: EOF\n");
    printf("fds: %s %s %s\n", kind(0), kind(1), kind(2));

    for (int i = 500; i < 1000; i++) {
        printf("out %04d the quick brown fox jumps over the lazy dog\n", i);
        if (i % 7 == 0)
            fprintf(stderr, "err %04d pack my box with five dozen liquor jugs\n", i);
    }
    puts("end of stdout");
    fputs("end of stderr\n", stderr);
    return 0;
}
