/* refuse KIND: holds something mos cannot checkpoint yet (KIND = child, socket,
 * io_uring), syncs (point 1), then checks it is unharmed and exits 0. */
#include "common.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/shm.h>

int main(int argc, char **argv) {
    const char *kind = argc > 1 ? argv[1] : "child";
    if (!strcmp(kind, "child")) {
        pid_t c = fork();
        if (c == 0) {
            mos_nap_ms(300000);
            _exit(3);
        }
        mos_sync(1);
        kill(c, SIGKILL);
        int st;
        waitpid(c, &st, 0);
        printf("child reaped %d\n", WIFSIGNALED(st));
    } else if (!strcmp(kind, "socket")) {
        int l = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        bind(l, (struct sockaddr *)&a, sizeof a);
        listen(l, 1);
        socklen_t len = sizeof a;
        getsockname(l, (struct sockaddr *)&a, &len);
        int c = socket(AF_INET, SOCK_STREAM, 0);
        connect(c, (struct sockaddr *)&a, sizeof a);
        int s = accept(l, NULL, NULL);
        mos_sync(1);
        write(c, "ping", 4);
        char b[4];
        printf("socket works %d\n", read(s, b, 4) == 4);
    } else if (!strcmp(kind, "sysv")) {
        int id = shmget(IPC_PRIVATE, 65536, IPC_CREAT | 0600);
        char *m = shmat(id, NULL, 0);
        shmctl(id, IPC_RMID, NULL);
        strcpy(m, "shared");
        mos_sync(1);
        printf("sysv shm intact %d\n", strcmp(m, "shared") == 0);
    } else {
        unsigned char params[120] = {0};
        long fd = syscall(SYS_io_uring_setup, 4, params);
        printf("io_uring fd %d\n", fd >= 0);
        fflush(stdout);
        mos_sync(1);
        printf("still here\n");
    }
    return 0;
}
