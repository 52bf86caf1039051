/* counter STAGES LINES EXITCODE [LOGFILE]
 * Prints LINES deterministic lines per stage to stdout (fully buffered when
 * stdout is a pipe, so part of each stage is still in the stdio buffer at the
 * sync point), appends "stage N" to LOGFILE (opened O_APPEND before the first
 * stage, relative paths allowed), and calls mos_sync(stage) after each stage.
 * Keeps a 4 MiB heap buffer with a pattern and verifies it at the end.
 * If $COUNTER_FLUSH is set, stdout is flushed right before each sync point.
 * Exits with EXITCODE.
 */
#include "common.h"

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: counter STAGES LINES EXITCODE [LOGFILE]\n");
        return 64;
    }
    int stages = atoi(argv[1]), lines = atoi(argv[2]), code = atoi(argv[3]);
    int flush = getenv("COUNTER_FLUSH") != NULL;
    int logfd = -1;
    if (argc > 4) {
        logfd = open(argv[4], O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (logfd < 0) {
            perror("open log");
            return 65;
        }
    }

    size_t hsz = 4u << 20;
    unsigned char *heap = malloc(hsz);
    for (size_t i = 0; i < hsz; i++)
        heap[i] = (unsigned char)(i * 131 + (i >> 12));

    unsigned long long acc = 1;
    for (int s = 1; s <= stages; s++) {
        for (int i = 0; i < lines; i++) {
            acc = acc * 6364136223846793005ULL + (unsigned long long)(s * 100000 + i);
            printf("stage %d line %d acc %016llx\n", s, i, acc);
        }
        if (logfd >= 0)
            dprintf(logfd, "stage %d\n", s);
        if (flush) {
            printf("sync %d\n", s);
            fflush(stdout);
        }
        mos_sync(s);
    }

    size_t bad = 0;
    for (size_t i = 0; i < hsz; i++)
        if (heap[i] != (unsigned char)(i * 131 + (i >> 12)))
            bad++;
    printf("heap %s\n", bad ? "CORRUPT" : "ok");
    free(heap);
    if (logfd >= 0)
        dprintf(logfd, "done\n");
    printf("done exit %d\n", code);
    return code;
}
