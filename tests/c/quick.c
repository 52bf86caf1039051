/* quick N: a batch job that ends at once, with status N % 7. */
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 0;
    printf("quick %d\n", n);
    return n % 7;
}
