/* Shared helpers for the mos integration test programs.
 *
 * Synchronisation with the test harness goes through files in the directory
 * named by $MOS_SYNC (absolute path, set by the harness):
 *   mos_sync(n) creates "ready.N", then waits until "go.N" exists.
 * The test checkpoints the program while it waits, so the checkpoint lands at
 * a well-defined point of the run.  An uninterrupted (baseline) run simply has
 * all go.N files created up front.  No file descriptor stays open across a
 * sync point, so fd numbers seen by the program are not disturbed.
 */
#ifndef MOS_TEST_COMMON_H
#define MOS_TEST_COMMON_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *mos_sync_dir(void)
{
    const char *d = getenv("MOS_SYNC");
    return d ? d : ".";
}

static void mos_nap_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    /* EINTR (checkpoint signal, test signals) just shortens the nap */
    nanosleep(&ts, NULL);
}

static void mos_sync(int n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/ready.%d", mos_sync_dir(), n);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        fprintf(stderr, "mos_sync: cannot create %s: %s\n", path, strerror(errno));
        exit(90);
    }
    close(fd);
    snprintf(path, sizeof path, "%s/go.%d", mos_sync_dir(), n);
    while (access(path, F_OK) != 0)
        mos_nap_ms(2);
}

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (!(cond)) {                                                     \
            printf("CHECK FAILED %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            printf(__VA_ARGS__);                                           \
            printf("\n");                                                  \
            fflush(stdout);                                                \
        }                                                                  \
    } while (0)

#endif
