/* churn ROUNDS: threads created and exited continuously (4 per round, joined),
 * a shared total under a mutex; progress every 500 rounds. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
long total = 0;
void *shortlived(void *a) { pthread_mutex_lock(&m); total += (long)a; pthread_mutex_unlock(&m); return a; }
int main(int argc, char **argv) {
    int rounds = atoi(argv[1]);
    for (int r = 0; r < rounds; r++) {
        pthread_t t[4];
        for (long i = 0; i < 4; i++) pthread_create(&t[i], 0, shortlived, (void*)(i + 1));
        for (int i = 0; i < 4; i++) { void *x; pthread_join(t[i], &x); }
        if (r % 500 == 0) { printf("round %d total %ld\n", r, total); fflush(stdout); }
    }
    printf("done total %ld\n", total);
    return 0;
}
