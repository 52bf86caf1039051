/* Kernel objects a JVM keeps: one end of a socketpair whose other end it closed (a
 * "marker" fd), and a shared writable mapping of a file (hsperfdata). After sync point
 * 1 the socket still reads end-of-file and fails writes with EPIPE, keeps O_NONBLOCK,
 * and the mapping is still the file's: writes through it reach the file, and the file's
 * bytes show through it. Usage: lonesock FILE */
#include "common.h"
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    int p[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, p);
    close(p[1]);
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    int f = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    ftruncate(f, 8192);
    char *m = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
    strcpy(m, "before");
    printf("before: mapped %s\n", m != MAP_FAILED ? "yes" : "NO");
    fflush(stdout);
    mos_sync(1);
    char c;
    int eof = read(p[0], &c, 1) == 0;
    int epipe = write(p[0], "x", 1) < 0 && errno == EPIPE;
    int nb = (fcntl(p[0], F_GETFL) & O_NONBLOCK) != 0;
    printf("socket: eof %s, epipe %s, nonblock %s\n", eof ? "yes" : "NO", epipe ? "yes" : "NO", nb ? "yes" : "NO");
    strcpy(m + 4096, "through the mapping");
    char buf[32] = { 0 };
    pread(f, buf, sizeof buf - 1, 4096);
    pwrite(f, "from the file", 14, 100);
    printf("mapping: kept %s, writes reach the file %s, file shows through %s\n", strcmp(m, "before") == 0 ? "yes" : "NO", strcmp(buf, "through the mapping") == 0 ? "yes" : "NO", strcmp(m + 100, "from the file") == 0 ? "yes" : "NO");
    return 0;
}
