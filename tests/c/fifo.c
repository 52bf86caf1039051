/* A named FIFO opened by the process itself: a reader (O_NONBLOCK), a writer, a second
 * separate reader, and a dup of the writer, with bytes buffered, kept across sync point
 * 1: after it the bytes are still there, written bytes come out, the two readers are
 * separate opens (O_NONBLOCK on one only), the dup shares its writer's. Usage: fifo PATH */
#include "common.h"
#include <sys/stat.h>

int main(int argc, char **argv)
{
    unlink(argv[1]);
    mkfifo(argv[1], 0600);
    int r = open(argv[1], O_RDONLY | O_NONBLOCK);
    int w = open(argv[1], O_WRONLY);
    int r2 = open(argv[1], O_RDONLY | O_NONBLOCK);
    fcntl(r2, F_SETFL, 0);
    int wd = dup(w);
    write(w, "buffered", 8);
    printf("before: opened %s\n", r >= 0 && w >= 0 && r2 >= 0 && wd >= 0 ? "ok" : "FAILED");
    fflush(stdout);
    mos_sync(1);
    char b[32] = { 0 };
    int n = (int)read(r, b, 8);
    int kept = n == 8 && memcmp(b, "buffered", 8) == 0;
    int nb = (fcntl(r, F_GETFL) & O_NONBLOCK) != 0, nb2 = (fcntl(r2, F_GETFL) & O_NONBLOCK) != 0;
    write(wd, "more", 4);
    memset(b, 0, sizeof b);
    n = (int)read(r, b, 4);
    int more = n == 4 && memcmp(b, "more", 4) == 0;
    int empty = read(r, b, 1) < 0 && errno == EAGAIN;
    int fl = fcntl(w, F_GETFL) == fcntl(wd, F_GETFL);
    printf("after: bytes kept %s, more through the dup %s, empty %s, separate opens %s, dup shares %s\n", kept ? "yes" : "NO", more ? "yes" : "NO", empty ? "yes" : "NO",
           nb && !nb2 ? "yes" : "NO", fl ? "yes" : "NO");
    unlink(argv[1]);
    return 0;
}
