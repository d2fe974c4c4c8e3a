#ifndef KIOSKD_CSUPPORT_H
#define KIOSKD_CSUPPORT_H

#include <sys/types.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

/// One resource limit to apply in the child before exec.
typedef struct ksup_rlimit {
    int resource;
    uint64_t soft;
    uint64_t hard;
} ksup_rlimit;

/// Everything the child does between fork and exec. Only async-signal-safe calls happen there.
typedef struct ksup_spawn_attr {
    const char *path;
    char *const *argv;
    char *const *envp;
    const char *cwd;            /* NULL: inherit */
    int stdout_fd;              /* write end the child gets as fd 1 */
    int stderr_fd;              /* write end the child gets as fd 2 */
    int extra_fd;               /* -1: none; else duplicated to extra_fd_target */
    int extra_fd_target;
    int set_ids;                /* non-zero: setgroups/setgid/setuid below */
    uid_t uid;
    gid_t gid;
    const gid_t *groups;
    size_t ngroups;
    const ksup_rlimit *rlimits;
    size_t nrlimits;
    int pdeathsig;              /* 0: none */
    const int *cgroup_fds;      /* open cgroup.procs files the child joins (writes "0") before exec */
    size_t ncgroup_fds;
} ksup_spawn_attr;

/// Stages a failed child reports through the exec-error pipe, so the parent can say what failed.
enum {
    KSUP_STAGE_NONE = 0,
    KSUP_STAGE_FORK,
    KSUP_STAGE_PIPE,
    KSUP_STAGE_SETSID,
    KSUP_STAGE_PDEATHSIG,
    KSUP_STAGE_RLIMIT,
    KSUP_STAGE_FDS,
    KSUP_STAGE_IDS,
    KSUP_STAGE_CHDIR,
    KSUP_STAGE_EXEC,
    KSUP_STAGE_PIDFD,
    KSUP_STAGE_CGROUP,
};

/// Forks and execs. The child leads a new session (so its pgid and sid equal its pid), has
/// stdin on /dev/null and every other fd closed. Returns 0 and fills pid/pidfd, or an errno
/// with *stage saying which step failed (the failed child has been reaped).
int ksup_spawn(const ksup_spawn_attr *attr, pid_t *pid_out, int *pidfd_out, int *stage_out);

/// pidfd_open(2); -1 with errno on failure.
int ksup_pidfd_open(pid_t pid);
/// pidfd_send_signal(2); -1 with errno on failure.
int ksup_pidfd_send_signal(int pidfd, int sig);
/// waitid(P_PIDFD, ...). Returns 0 and fills code (CLD_*), status and pid; pid 0 if not yet exited
/// (with WNOHANG). -1 with errno on failure.
int ksup_wait_pidfd(int pidfd, int options, int *code_out, int *status_out, pid_t *pid_out);
/// waitid(P_ALL, ...WNOHANG|WNOWAIT): peeks at one exited child without reaping it. pid 0: none.
int ksup_peek_exited_child(pid_t *pid_out);
/// pipe2(2) with O_CLOEXEC (not visible to Swift without _GNU_SOURCE).
int ksup_pipe_cloexec(int fds[2]);
/// Makes this process a child subreaper (orphans of our descendants reparent to us).
int ksup_set_child_subreaper(void);
/// Installs a SIGCHLD handler that writes to an eventfd, so a poll loop wakes on child exits.
int ksup_install_sigchld_wakeup(int eventfd);
/// Names the calling thread (at most 15 bytes are kept), for top -H and core dumps.
void ksup_name_thread(const char *name);

#endif
