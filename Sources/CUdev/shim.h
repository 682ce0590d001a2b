#include <libudev.h>
#include <sys/prctl.h>

/// Names the calling thread as `top -H` and /proc/PID/task/TID/comm show it (at most 15 bytes kept).
/// Foundation's `Thread.name` does not reach the kernel on Linux.
static inline void cudev_name_this_thread(const char *name) { (void)prctl(PR_SET_NAME, name, 0, 0, 0); }
