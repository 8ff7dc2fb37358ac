/*
 * LD_PRELOAD shim for benchmarks: every fsync/fdatasync of the process (and
 * of the processes it starts) takes SLOWSYNC_US microseconds longer (default
 * 1000) than the disk needs, to emulate a disk whose syncs are slower than
 * this VM's local one (network-attached cloud volumes sync in the order of a
 * millisecond). docs/performance.md, "A leader's sync beside its followers'".
 *
 *   gcc -O2 -shared -fPIC -o /tmp/slowsync.so bench/slowsync.c -ldl
 *   LD_PRELOAD=/tmp/slowsync.so SLOWSYNC_US=1000 $CARGO_TARGET_DIR/release/petuum-jobs-bench 300 0
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void delay(void) {
    static long us = -1;
    if (us < 0) {
        const char *e = getenv("SLOWSYNC_US");
        us = e ? atol(e) : 1000;
    }
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* The real call, then the delay. */
#define SLOW(name)                                                   \
    int name(int fd) {                                               \
        static int (*real)(int);                                     \
        if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, #name);     \
        int r = real(fd);                                            \
        delay();                                                     \
        return r;                                                    \
    }

SLOW(fdatasync)
SLOW(fsync)
