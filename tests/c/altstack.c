/* Alternate signal stacks: the main thread and a second thread each set their own
 * (sigaltstack), and a SA_ONSTACK handler notes whether it ran on the calling thread's.
 * After sync point 1 each thread checks its stack is still set and still used. */
#include "common.h"
#include <pthread.h>
#include <signal.h>
#include <stdint.h>

static __thread char *alt;
static __thread volatile int on_alt;

static void handler(int sig)
{
    char here;
    (void)sig;
    on_alt = &here >= alt && &here < alt + SIGSTKSZ * 4;
}

static int check(const char *who)
{
    stack_t ss;
    sigaltstack(NULL, &ss);
    on_alt = 0;
    pthread_kill(pthread_self(), SIGUSR1);
    printf("%s: altstack %s, handler on it %s\n", who, ss.ss_sp == alt && ss.ss_size == SIGSTKSZ * 4 ? "kept" : "LOST", on_alt ? "yes" : "no");
    return 0;
}

static void setup(void)
{
    alt = malloc(SIGSTKSZ * 4);
    stack_t ss = { .ss_sp = alt, .ss_size = SIGSTKSZ * 4, .ss_flags = 0 };
    sigaltstack(&ss, NULL);
}

static pthread_barrier_t b;

static void *worker(void *a)
{
    (void)a;
    setup();
    pthread_barrier_wait(&b);
    pthread_barrier_wait(&b);
    check("thread");
    return NULL;
}

int main(void)
{
    struct sigaction sa = { .sa_handler = handler, .sa_flags = SA_ONSTACK };
    sigaction(SIGUSR1, &sa, NULL);
    setup();
    pthread_barrier_init(&b, NULL, 2);
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    pthread_barrier_wait(&b);
    check("main before");
    fflush(stdout);
    mos_sync(1);
    check("main");
    fflush(stdout);
    pthread_barrier_wait(&b);
    pthread_join(t, NULL);
    return 0;
}
