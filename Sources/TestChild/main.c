/* kioskd-testchild: a child that misbehaves on command, for the supervision tests.
 * Options run in order; the last one decides how it ends (default: sleep until killed).
 *   --print TEXT         write TEXT and a newline to stdout
 *   --stderr TEXT        write TEXT and a newline to stderr
 *   --notify FD TEXT     write TEXT and a newline to fd FD (readiness, like Xvfb -displayfd)
 *   --touch PATH         create PATH
 *   --touch-unless MARK PATH  create PATH unless MARK exists
 *   --sleep-ms N         sleep N ms
 *   --ignore-term        ignore SIGTERM from now on
 *   --grandchild PIDFILE fork a child that calls setsid, ignores SIGTERM, writes its pid to
 *                        PIDFILE and sleeps forever (an escaped grandchild)
 *   --orphan             leave an orphan: a grandchild that outlives its parent by 50 ms and
 *                        exits, to be reaped by whoever adopted it
 *   --listen PORT BANNER listen on 127.0.0.1:PORT and greet every connection with BANNER
 *   --hold PORT          listen on 127.0.0.1:PORT and keep every connection open (a server
 *                        whose clients see it die, as X clients see Xvfb die)
 *   --follow PORT        connect to 127.0.0.1:PORT, print "following", and exit 1 once the
 *                        server closes the connection (a client that dies with its server)
 *   --flood BYTES        write BYTES bytes of 100-byte lines to stdout, then "flood done"
 *   --exit CODE          exit with CODE
 *   --crash              abort (SIGABRT)
 *   --exit-if-exists PATH CODE  exit with CODE if PATH exists (lets a test make a restart fail)
 *   --print-env NAME     print NAME=value (or NAME unset)
 *   --print-ids          print uid=, gid=, nofile= of this process
 *   --print-fds          print the open fds, e.g. "fds=0,1,2"
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {}
}

static void forever(void) {
    for (;;) pause();
}

static void write_line(int fd, const char *text) {
    dprintf(fd, "%s\n", text);
}

/* banner NULL: keep each connection open instead of greeting and closing it. */
struct listener { int fd; const char *banner; };

static void *serve(void *arg) {
    struct listener *l = arg;
    for (;;) {
        int c = accept(l->fd, NULL, NULL);
        if (c < 0 || !l->banner) continue;
        ssize_t ignored = write(c, l->banner, strlen(l->banner));
        (void)ignored;
        close(c);
    }
    return NULL;
}

static int listen_loopback(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 16) < 0) {
        perror("listen");
        return -1;
    }
    return fd;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--print") && i + 1 < argc) {
            write_line(1, argv[++i]);
        } else if (!strcmp(a, "--stderr") && i + 1 < argc) {
            write_line(2, argv[++i]);
        } else if (!strcmp(a, "--notify") && i + 2 < argc) {
            int fd = atoi(argv[++i]);
            write_line(fd, argv[++i]);
            close(fd);
        } else if (!strcmp(a, "--touch") && i + 1 < argc) {
            int fd = open(argv[++i], O_CREAT | O_WRONLY, 0644);
            if (fd >= 0) close(fd);
        } else if (!strcmp(a, "--touch-unless") && i + 2 < argc) {
            const char *mark = argv[++i], *path = argv[++i];
            struct stat st;
            if (stat(mark, &st) != 0) {
                int fd = open(path, O_CREAT | O_WRONLY, 0644);
                if (fd >= 0) close(fd);
            }
        } else if (!strcmp(a, "--sleep-ms") && i + 1 < argc) {
            sleep_ms(atol(argv[++i]));
        } else if (!strcmp(a, "--ignore-term")) {
            signal(SIGTERM, SIG_IGN);
        } else if (!strcmp(a, "--grandchild") && i + 1 < argc) {
            const char *pidfile = argv[++i];
            pid_t pid = fork();
            if (pid == 0) {
                setsid();
                signal(SIGTERM, SIG_IGN);
                char tmp[4096];
                snprintf(tmp, sizeof tmp, "%s.tmp", pidfile);
                FILE *f = fopen(tmp, "w");
                if (f) {
                    fprintf(f, "%d\n", getpid());
                    fclose(f);
                    rename(tmp, pidfile);
                }
                forever();
            }
        } else if (!strcmp(a, "--orphan")) {
            pid_t mid = fork();
            if (mid == 0) {
                if (fork() == 0) {
                    sleep_ms(50);
                    _exit(0);
                }
                _exit(0);
            }
            int status;
            waitpid(mid, &status, 0);
        } else if ((!strcmp(a, "--listen") && i + 2 < argc) || (!strcmp(a, "--hold") && i + 1 < argc)) {
            static struct listener l;
            l.fd = listen_loopback(atoi(argv[++i]));
            l.banner = !strcmp(a, "--listen") ? argv[++i] : NULL;
            if (l.fd < 0) return 3;
            pthread_t t;
            pthread_create(&t, NULL, serve, &l);
        } else if (!strcmp(a, "--follow") && i + 1 < argc) {
            int fd = socket(AF_INET, SOCK_STREAM, 0);
            struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[++i]))};
            addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
                perror("follow");
                return 1;
            }
            write_line(1, "following");
            char buf[64];
            while (read(fd, buf, sizeof buf) > 0) {}
            return 1;
        } else if (!strcmp(a, "--flood") && i + 1 < argc) {
            long long total = atoll(argv[++i]);
            char line[100];
            memset(line, 'x', sizeof line - 1);
            line[sizeof line - 1] = '\n';
            for (long long written = 0; written < total; written += sizeof line) {
                const char *p = line;
                size_t left = sizeof line;
                while (left > 0) {
                    ssize_t n = write(1, p, left);
                    if (n <= 0) return 4;
                    p += n;
                    left -= (size_t)n;
                }
            }
            write_line(1, "flood done");
        } else if (!strcmp(a, "--exit") && i + 1 < argc) {
            return atoi(argv[++i]);
        } else if (!strcmp(a, "--crash")) {
            abort();
        } else if (!strcmp(a, "--exit-if-exists") && i + 2 < argc) {
            const char *path = argv[++i];
            int code = atoi(argv[++i]);
            struct stat st;
            if (stat(path, &st) == 0) return code;
        } else if (!strcmp(a, "--print-env") && i + 1 < argc) {
            const char *name = argv[++i];
            const char *v = getenv(name);
            if (v) printf("%s=%s\n", name, v); else printf("%s unset\n", name);
        } else if (!strcmp(a, "--print-ids")) {
            struct rlimit rl;
            getrlimit(RLIMIT_NOFILE, &rl);
            printf("uid=%d gid=%d nofile=%llu\n", getuid(), getgid(), (unsigned long long)rl.rlim_cur);
        } else if (!strcmp(a, "--print-fds")) {
            DIR *d = opendir("/proc/self/fd");
            int fds[256], n = 0, self = d ? dirfd(d) : -1;
            struct dirent *e;
            while (d && (e = readdir(d)) && n < 256) {
                if (e->d_name[0] == '.') continue;
                int fd = atoi(e->d_name);
                if (fd != self) fds[n++] = fd;
            }
            if (d) closedir(d);
            for (int x = 0; x < n; x++)
                for (int y = x + 1; y < n; y++)
                    if (fds[y] < fds[x]) { int t = fds[x]; fds[x] = fds[y]; fds[y] = t; }
            printf("fds=");
            for (int x = 0; x < n; x++) printf(x ? ",%d" : "%d", fds[x]);
            printf("\n");
        } else {
            fprintf(stderr, "kioskd-testchild: unknown option %s\n", a);
            return 2;
        }
    }
    forever();
}
