/*
 * lxd-exec: what LXD runs as `LXD_EXEC_PATH`, so that each vendor container's `[lxc monitor]` is a
 * small C process instead of a copy of LXD's Go runtime.
 *
 * LXD 5.0 starts a container by running `$LXD_EXEC_PATH forkstart NAME LXCPATH CONFIG` (default: its
 * own binary). That process asks liblxc to start the container; liblxc forks it into the container's
 * monitor, which lives as long as the container. Forked from `lxd forkstart`, the monitor keeps about
 * 11 MB of private memory (Go heap, globals) per container; forked from this program, about 0.4 MB.
 *
 * `forkstart` here does exactly what LXD 5.0's `lxd/main_forkstart.go` does, in the same order, with
 * the same liblxc (liblxc1 from Debian, the library LXD itself links). Every other subcommand (forkexec,
 * forkfile, forkproxy, callhook, ...) and anything unexpected is handed to LXD's own binary unchanged.
 *
 * Built by scripts/setup and scripts/package: cc -O2 -Wall -Werror -o lxd-exec lxd-exec.c -llxc
 * (headers: Debian's lxc-dev).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <lxc/lxccontainer.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef LXD_BINARY
#define LXD_BINARY "/usr/bin/lxd"
#endif
#ifndef LXD_LOG_DIR
#define LXD_LOG_DIR "/var/log/lxd"
#endif

static int forkstart(const char *name, const char *lxcpath, const char *config) {
    /* LXD: "Aborting attach to prevent leaking file descriptors into container". */
    if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
        fprintf(stderr, "Aborting attach to prevent leaking file descriptors into container: %s\n", strerror(errno));
        return 1;
    }
    struct lxc_container *c = lxc_container_new(name, lxcpath);
    if (c == NULL) {
        fprintf(stderr, "Error initializing container for start: %s\n", name);
        return 1;
    }
    if (!c->load_config(c, config)) {
        fprintf(stderr, "Error opening startup config file: %s\n", config);
        return 1;
    }
    /* LXD collects this process's output until it exits; the daemonized monitor must not hold the pipes.
     * What liblxc still prints goes to the container's forkstart.log, as with `lxd forkstart`. */
    char log[4096];
    int n = snprintf(log, sizeof log, "%s/%s/forkstart.log", LXD_LOG_DIR, name);
    close(0);
    close(1);
    close(2);
    if (n > 0 && (size_t)n < sizeof log) {
        unlink(log);
        int fd = open(log, O_WRONLY | O_CREAT | O_SYNC | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup3(fd, 1, 0);
            dup3(fd, 2, 0);
        }
    }
    return c->start(c, 0, NULL) ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "forkstart") == 0 && geteuid() == 0)
        return forkstart(argv[2], argv[3], argv[4]);
    execv(LXD_BINARY, argv);
    fprintf(stderr, "lxd-exec: cannot run %s: %s\n", LXD_BINARY, strerror(errno));
    return 127;
}
