/* SIGEV_THREAD POSIX timers (glibc runs them from a helper thread that blocks every
 * signal): a 5 ms periodic timer runs its function on other threads before and after
 * sync point 1; the checkpoint must stop every thread, and after the restart the timer
 * fires again; a second one-shot timer armed after the restart fires once; both are
 * deleted. Only booleans are printed. */
#include "common.h"
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

static atomic_int ticks, other_thread, shot;
static pthread_t main_thread;

static void tick(union sigval v)
{
    if (!pthread_equal(pthread_self(), main_thread))
        atomic_fetch_add(&other_thread, 1);
    atomic_fetch_add((atomic_int *)v.sival_ptr, 1);
}

static int wait_for(atomic_int *c, int n)
{
    for (int i = 0; i < 2000 && atomic_load(c) < n; i++)
        mos_nap_ms(2);
    return atomic_load(c) >= n;
}

int main(void)
{
    main_thread = pthread_self();
    struct sigevent sev = { .sigev_notify = SIGEV_THREAD, .sigev_notify_function = tick, .sigev_value.sival_ptr = &ticks };
    timer_t t;
    int ok = timer_create(CLOCK_MONOTONIC, &sev, &t) == 0;
    struct itimerspec its = { .it_interval = { 0, 5000000 }, .it_value = { 0, 5000000 } };
    ok &= timer_settime(t, 0, &its, NULL) == 0;
    printf("before: created %s, fires %s\n", ok ? "ok" : "FAILED", wait_for(&ticks, 5) ? "yes" : "NO");
    fflush(stdout);
    mos_sync(1);
    int now = atomic_load(&ticks);
    printf("after: fires again %s\n", wait_for(&ticks, now + 5) ? "yes" : "NO");
    struct sigevent one = { .sigev_notify = SIGEV_THREAD, .sigev_notify_function = tick, .sigev_value.sival_ptr = &shot };
    timer_t t2;
    struct itimerspec once = { .it_value = { 0, 20000000 } };
    int ok2 = timer_create(CLOCK_REALTIME, &one, &t2) == 0 && timer_settime(t2, 0, &once, NULL) == 0;
    printf("one-shot: %s %s\n", ok2 ? "armed" : "FAILED", wait_for(&shot, 1) ? "fired" : "NOT FIRED");
    struct itimerspec left;
    printf("gettime: %s\n", timer_gettime(t, &left) == 0 && left.it_interval.tv_nsec == 5000000 ? "ok" : "FAILED");
    printf("deleted: %s\n", timer_delete(t) == 0 && timer_delete(t2) == 0 ? "ok" : "FAILED");
    printf("ran on other threads: %s\n", atomic_load(&other_thread) > 0 ? "yes" : "NO");
    return 0;
}
