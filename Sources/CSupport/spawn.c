#define _GNU_SOURCE
#include "CSupport.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef P_PIDFD
#define P_PIDFD 3
#endif

struct child_failure {
    int stage;
    int err;
};

/* Child side: report the failing step and leave without running atexit handlers. */
static void child_fail(int fd, int stage) {
    struct child_failure f = {stage, errno};
    ssize_t ignored = write(fd, &f, sizeof f);
    (void)ignored;
    _exit(127);
}

/* Moves fd above every target number so dup2 into 0..target never clobbers a source. */
static int lift(int fd, int floor) {
    if (fd < 0) return fd;
    return fcntl(fd, F_DUPFD_CLOEXEC, floor);
}

static void child_main(const ksup_spawn_attr *a, int errfd, pid_t parent) {
    /* Dispositions and the mask survive exec; the Swift runtime and dispatch may have changed them. */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        (void)sigaction(sig, &dfl, NULL);
    }
    sigset_t empty;
    sigemptyset(&empty);
    (void)sigprocmask(SIG_SETMASK, &empty, NULL);

    if (setsid() < 0) child_fail(errfd, KSUP_STAGE_SETSID);

    /* Join the cgroups before anything can fork: no descendant can start outside them. Here,
       not later: the fd mapping below may reuse these numbers, and after setresuid the writes
       fail with EACCES (the groups belong to root). */
    for (size_t i = 0; i < a->ncgroup_fds; i++) {
        ssize_t n;
        do {
            n = write(a->cgroup_fds[i], "0", 1);
        } while (n < 0 && errno == EINTR);
        if (n != 1) child_fail(errfd, KSUP_STAGE_CGROUP);
    }

    for (size_t i = 0; i < a->nrlimits; i++) {
        struct rlimit rl = {(rlim_t)a->rlimits[i].soft, (rlim_t)a->rlimits[i].hard};
        if (setrlimit(a->rlimits[i].resource, &rl) < 0) child_fail(errfd, KSUP_STAGE_RLIMIT);
    }

    int floor = a->extra_fd_target > 3 ? a->extra_fd_target + 1 : 4;
    int out = lift(a->stdout_fd, floor);
    int err = lift(a->stderr_fd, floor);
    int extra = lift(a->extra_fd, floor);
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (out < 0 || err < 0 || devnull < 0 || (a->extra_fd >= 0 && extra < 0))
        child_fail(errfd, KSUP_STAGE_FDS);
    if (dup2(devnull, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
        child_fail(errfd, KSUP_STAGE_FDS);
    if (extra >= 0 && dup2(extra, a->extra_fd_target) < 0) child_fail(errfd, KSUP_STAGE_FDS);
    int first_closed = (extra >= 0 ? a->extra_fd_target : 2) + 1;
    /* CLOEXEC rather than close, so errfd (above the range start) still works until exec. */
    if (syscall(SYS_close_range, (unsigned)first_closed, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
        for (int fd = first_closed; fd < 65536; fd++)
            if (fd != errfd) (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
    }

    if (a->set_ids) {
        /* Raw syscalls: glibc's wrappers would try to coordinate threads that do not exist here. */
        if (syscall(SYS_setgroups, a->ngroups, a->groups) < 0) child_fail(errfd, KSUP_STAGE_IDS);
        if (syscall(SYS_setresgid, a->gid, a->gid, a->gid) < 0) child_fail(errfd, KSUP_STAGE_IDS);
        if (syscall(SYS_setresuid, a->uid, a->uid, a->uid) < 0) child_fail(errfd, KSUP_STAGE_IDS);
    }

    /* After the id change: changing credentials clears the parent-death signal. */
    if (a->pdeathsig > 0) {
        if (prctl(PR_SET_PDEATHSIG, a->pdeathsig) < 0) child_fail(errfd, KSUP_STAGE_PDEATHSIG);
        /* The parent may have died before prctl: then nobody would ever signal us. */
        if (getppid() != parent) _exit(126);
    }

    if (a->cwd && chdir(a->cwd) < 0) child_fail(errfd, KSUP_STAGE_CHDIR);

    execve(a->path, a->argv, a->envp);
    child_fail(errfd, KSUP_STAGE_EXEC);
}

int ksup_spawn(const ksup_spawn_attr *attr, pid_t *pid_out, int *pidfd_out, int *stage_out) {
    int errpipe[2];
    *stage_out = KSUP_STAGE_NONE;
    if (pipe2(errpipe, O_CLOEXEC) < 0) {
        *stage_out = KSUP_STAGE_PIPE;
        return errno;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(errpipe[0]);
        close(errpipe[1]);
        *stage_out = KSUP_STAGE_FORK;
        return e;
    }
    if (pid == 0) {
        close(errpipe[0]);
        child_main(attr, errpipe[1], parent);
    }
    close(errpipe[1]);

    struct child_failure f;
    ssize_t n;
    do {
        n = read(errpipe[0], &f, sizeof f);
    } while (n < 0 && errno == EINTR);
    close(errpipe[0]);
    if (n == (ssize_t)sizeof f) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        *stage_out = f.stage;
        return f.err;
    }

    /* The child is ours and not reaped yet, so its pid cannot have been reused. */
    int pidfd = ksup_pidfd_open(pid);
    if (pidfd < 0) {
        int e = errno;
        kill(pid, SIGKILL);
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        *stage_out = KSUP_STAGE_PIDFD;
        return e;
    }
    *pid_out = pid;
    *pidfd_out = pidfd;
    return 0;
}

int ksup_pidfd_open(pid_t pid) {
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

int ksup_pidfd_send_signal(int pidfd, int sig) {
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

int ksup_wait_pidfd(int pidfd, int options, int *code_out, int *status_out, pid_t *pid_out) {
    siginfo_t info;
    memset(&info, 0, sizeof info);
    int r;
    do {
        r = waitid((idtype_t)P_PIDFD, (id_t)pidfd, &info, options);
    } while (r < 0 && errno == EINTR);
    if (r < 0) return -1;
    *code_out = info.si_code;
    *status_out = info.si_status;
    *pid_out = info.si_pid;
    return 0;
}

int ksup_peek_exited_child(pid_t *pid_out) {
    siginfo_t info;
    memset(&info, 0, sizeof info);
    int r;
    do {
        r = waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        if (errno == ECHILD) {
            *pid_out = 0;
            return 0;
        }
        return -1;
    }
    *pid_out = info.si_pid;
    return 0;
}

int ksup_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC);
}

int ksup_set_child_subreaper(void) {
    return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
}

static volatile int sigchld_wakeup_fd = -1;

static void on_sigchld(int sig) {
    (void)sig;
    int saved = errno;
    uint64_t one = 1;
    if (sigchld_wakeup_fd >= 0) {
        ssize_t ignored = write(sigchld_wakeup_fd, &one, sizeof one);
        (void)ignored;
    }
    errno = saved;
}

int ksup_install_sigchld_wakeup(int eventfd) {
    sigchld_wakeup_fd = eventfd;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigchld;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigemptyset(&sa.sa_mask);
    return sigaction(SIGCHLD, &sa, NULL);
}

void ksup_name_thread(const char *name) { prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0); }
