/* A TCP client: connects to 127.0.0.1:argv[1] (or argv[2]:argv[1]) at home, then (after mos_sync(1), where the
 * test migrates it) sends "ping I" lines and prints each echo; then opens a second
 * connection (socket() after migration) and does the same once. */
#include "common.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

static const char *host = "127.0.0.1";

static int dial(int port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    a.sin_addr.s_addr = inet_addr(host);
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) != 0) { perror("connect"); exit(90); }
    return s;
}

static void ping(int s, const char *msg)
{
    char buf[128];
    int n = snprintf(buf, sizeof buf, "%s\n", msg);
    if (send(s, buf, n, 0) != n) { perror("send"); exit(91); }
    int got = 0;
    while (got < n) {
        ssize_t k = recv(s, buf + got, sizeof buf - 1 - got, 0);
        if (k <= 0) { perror("recv"); exit(92); }
        got += k;
    }
    buf[got] = 0;
    printf("echo: %s", buf);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    int port = atoi(argv[1]);
    if (argc > 2)
        host = argv[2];
    int s = dial(port);
    ping(s, "before");
    mos_sync(1);
    for (int i = 0; i < 5; i++) {
        char m[32];
        snprintf(m, sizeof m, "ping %d", i);
        ping(s, m);
    }
    /* sendmmsg and recvmmsg (as glibc's resolver uses them) */
    {
        char a[] = "mm a\n", b[] = "mm b\n", in[64];
        struct iovec iv[3] = { { a, 5 }, { b, 5 }, { in, sizeof in - 1 } };
        struct mmsghdr mm[2];
        memset(mm, 0, sizeof mm);
        mm[0].msg_hdr.msg_iov = &iv[0];
        mm[0].msg_hdr.msg_iovlen = 1;
        mm[1].msg_hdr.msg_iov = &iv[1];
        mm[1].msg_hdr.msg_iovlen = 1;
        int sent = sendmmsg(s, mm, 2, 0);
        printf("sendmmsg: %d %u %u\n", sent, mm[0].msg_len, mm[1].msg_len);
        int got = 0;
        while (got < 10) {
            struct mmsghdr r;
            memset(&r, 0, sizeof r);
            iv[2].iov_base = in + got;
            iv[2].iov_len = sizeof in - 1 - got;
            r.msg_hdr.msg_iov = &iv[2];
            r.msg_hdr.msg_iovlen = 1;
            int k = recvmmsg(s, &r, 1, 0, NULL);
            if (k != 1) { perror("recvmmsg"); exit(93); }
            got += r.msg_len;
        }
        in[got] = 0;
        printf("recvmmsg: %s", in);
    }
    /* a receive timeout set after the migration ends a recv that gets nothing */
    struct timeval tv = { 0, 200000 };
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char c;
    ssize_t k = recv(s, &c, 1, 0);
    printf("recv timeout: %zd %s\n", k, k < 0 ? strerror(errno) : "data");
    tv.tv_usec = 0;
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in peer;
    socklen_t len = sizeof peer;
    getpeername(s, (struct sockaddr *)&peer, &len);
    printf("peer port %d\n", ntohs(peer.sin_port));
    int s2 = dial(port);
    ping(s2, "second connection");
    close(s2);
    close(s);
    return 0;
}
