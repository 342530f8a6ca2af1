// The monotonic clock in seconds, for the C programs of tallyd's benchmarks
// (statsd_loadgen.c, udp_sink.c).
#ifndef TALLYD_BENCHES_MONOTONIC_H
#define TALLYD_BENCHES_MONOTONIC_H

#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#endif
