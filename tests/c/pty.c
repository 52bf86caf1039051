/* A pty pair the process opened itself (master and slave), its termios changed (no
 * echo) and its window size set, kept across sync point 1: after it the pair still
 * carries bytes both ways and keeps its settings. Only booleans are printed. */
#include "common.h"
#include <sys/ioctl.h>
#include <termios.h>

int main(void)
{
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    grantpt(m);
    unlockpt(m);
    int s = open(ptsname(m), O_RDWR | O_NOCTTY);
    struct termios t;
    tcgetattr(s, &t);
    t.c_lflag &= ~ECHO;
    tcsetattr(s, TCSANOW, &t);
    struct winsize w = { .ws_row = 40, .ws_col = 100 };
    ioctl(m, TIOCSWINSZ, &w);
    printf("before: pair %s\n", m >= 0 && s >= 0 ? "ok" : "FAILED");
    fflush(stdout);
    mos_sync(1);
    char b[64] = { 0 };
    write(m, "hello\n", 6);
    int n = (int)read(s, b, sizeof b - 1);
    int down = n == 6 && memcmp(b, "hello\n", 6) == 0;
    write(s, "back", 4);
    memset(b, 0, sizeof b);
    n = (int)read(m, b, sizeof b - 1);
    int up = n >= 4 && memcmp(b, "back", 4) == 0;
    struct termios t2;
    tcgetattr(s, &t2);
    struct winsize w2;
    ioctl(s, TIOCGWINSZ, &w2);
    printf("after: master to slave %s, slave to master %s, no echo %s, window %s, isatty %s\n", down ? "ok" : "FAILED", up ? "ok" : "FAILED", (t2.c_lflag & ECHO) == 0 ? "kept" : "LOST",
           w2.ws_row == 40 && w2.ws_col == 100 ? "kept" : "LOST", isatty(s) ? "yes" : "NO");
    return 0;
}
