/* Time after a restart: clock_gettime(CLOCK_MONOTONIC / CLOCK_REALTIME),
 * gettimeofday and time() (all vDSO calls in glibc) work in the restarted
 * process and move forward relative to the values read before the checkpoint.
 * Only booleans are printed, so the output is deterministic.
 */
#include "common.h"
#include <sys/auxv.h>
#include <sys/time.h>

static double ts_d(struct timespec t) { return t.tv_sec + t.tv_nsec / 1e9; }

int main(void)
{
    struct timespec m0, r0, m1, r1;
    struct timeval tv0, tv1;
    clock_gettime(CLOCK_MONOTONIC, &m0);
    clock_gettime(CLOCK_REALTIME, &r0);
    gettimeofday(&tv0, NULL);
    time_t t0 = time(NULL);
    printf("before: vdso %s\n", getauxval(AT_SYSINFO_EHDR) ? "present" : "absent");
    mos_sync(1);

    /* hammer the vDSO entry points */
    int mono_ok = 1, real_ok = 1, tod_ok = 1;
    struct timespec prev, cur;
    clock_gettime(CLOCK_MONOTONIC, &prev);
    for (int i = 0; i < 100000; i++) {
        if (clock_gettime(CLOCK_MONOTONIC, &cur) != 0) mono_ok = 0;
        if (ts_d(cur) < ts_d(prev)) mono_ok = 0;
        prev = cur;
    }
    clock_gettime(CLOCK_MONOTONIC, &m1);
    if (clock_gettime(CLOCK_REALTIME, &r1) != 0) real_ok = 0;
    if (gettimeofday(&tv1, NULL) != 0) tod_ok = 0;
    time_t t1 = time(NULL);
    struct timespec cpu;
    int cpu_ok = clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu) == 0;
    struct timespec coarse;
    int coarse_ok = clock_gettime(CLOCK_MONOTONIC_COARSE, &coarse) == 0 && coarse.tv_sec > 0;

    double dm = ts_d(m1) - ts_d(m0);
    double dr = ts_d(r1) - ts_d(r0);
    double dtv = (tv1.tv_sec - tv0.tv_sec) + (tv1.tv_usec - tv0.tv_usec) / 1e6;
    printf("monotonic works %d forward %d\n", mono_ok, dm > 0 && dm < 3600);
    printf("realtime works %d forward %d\n", real_ok, dr > 0 && dr < 3600);
    printf("gettimeofday works %d forward %d\n", tod_ok, dtv > 0 && dtv < 3600);
    printf("time() forward %d\n", t1 >= t0 && t1 - t0 < 3600);
    printf("realtime close to gettimeofday %d\n", (ts_d(r1) - (tv1.tv_sec + tv1.tv_usec / 1e6)) < 5.0);
    printf("cputime works %d coarse works %d\n", cpu_ok, coarse_ok);
    /* machine-readable elapsed monotonic milliseconds for the test (stderr) */
    fprintf(stderr, "elapsed_ms %.0f\n", dm * 1000);
    return 0;
}
