/* Thread cancellation across a restart: threads are created and cancelled, deferred
 * (blocked in nanosleep, a cancellation point) and asynchronous (spinning with
 * PTHREAD_CANCEL_ASYNCHRONOUS), before and after sync point 1; two threads that were
 * running at the checkpoint are cancelled after it. pthread_cancel signals the tid
 * glibc keeps in the thread's descriptor: the thread must still have it. */
#include "common.h"
#include <pthread.h>

static void *sleeper(void *a)
{
    (void)a;
    for (;;)
        mos_nap_ms(5);
    return NULL;
}

static void *spinner(void *a)
{
    (void)a;
    pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, NULL);
    volatile unsigned long x = 0;
    for (;;)
        x++;
    return NULL;
}

static int cycle(int n)
{
    int ok = 0;
    for (int i = 0; i < n; i++) {
        pthread_t t;
        pthread_create(&t, NULL, (i & 1) ? spinner : sleeper, NULL);
        mos_nap_ms(1);
        pthread_cancel(t);
        void *r;
        pthread_join(t, &r);
        ok += r == PTHREAD_CANCELED;
    }
    return ok;
}

int main(void)
{
    printf("before: %d of 20 cancelled\n", cycle(20));
    pthread_t s1, s2;
    pthread_create(&s1, NULL, sleeper, NULL);
    pthread_create(&s2, NULL, spinner, NULL);
    fflush(stdout);
    mos_sync(1);
    pthread_cancel(s1);
    pthread_cancel(s2);
    void *r1, *r2;
    pthread_join(s1, &r1);
    pthread_join(s2, &r2);
    printf("threads of the checkpoint: %s, %s\n", r1 == PTHREAD_CANCELED ? "cancelled" : "NOT CANCELLED", r2 == PTHREAD_CANCELED ? "cancelled" : "NOT CANCELLED");
    printf("after: %d of 20 cancelled\n", cycle(20));
    return 0;
}
