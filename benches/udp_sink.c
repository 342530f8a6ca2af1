// A reference for tallyd's flat-out benchmark rows: benches/run.sh builds it into target/.
// udp_sink: a UDP receiver that only counts what it receives (loopback only), to show how many
// lines a second this machine's kernel and senders deliver to a receiver that does no work.
//
// Build: gcc -O2 -Wall -o udp_sink udp_sink.c
// Usage: udp_sink [-p 39135] [-T seconds] [-b receive_buffer_bytes] [-P pause_ms]
// Binds 127.0.0.1:<p> with a receive buffer of -b bytes (default 16 MiB; SO_RCVBUFFORCE when
// allowed, else up to net.core.rmem_max), receives with recvmmsg(2) 64 datagrams at a time
// until none is left, then sleeps P ms (default 5), as tallyd pauses between reads (a blocking
// read would be woken by every datagram, and take the senders' processor time), and counts
// datagrams and lines (a line per datagram and per newline in it, as StatsD splits them). It
// says "udp_sink listening" on stderr once bound. It stops T seconds (default 3) after its
// first datagram, or 1 s after its last, and prints one key=value line: datagrams, lines,
// seconds (first to last datagram), lines_rate (lines/s over them), cpu_s_per_million (its
// own processor time, user and system, per million lines).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "monotonic.h"

#define BATCH 64
#define SLOT 65536

int main(int argc, char **argv) {
    int port = 39135, buffer = 16 << 20, opt;
    double secs = 3, pause_ms = 5;
    while ((opt = getopt(argc, argv, "p:T:b:P:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'T': secs = atof(optarg); break;
        case 'b': buffer = atoi(optarg); break;
        case 'P': pause_ms = atof(optarg); break;
        default:
            fprintf(stderr, "usage: udp_sink [-p port] [-T seconds] [-b receive_buffer_bytes]"
                            " [-P pause_ms]\n");
            return 2;
        }
    }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) {
        perror("socket");
        return 1;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buffer, sizeof buffer) != 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        perror("bind");
        return 1;
    }
    fprintf(stderr, "udp_sink listening\n");
    char *bytes = malloc((size_t)BATCH * SLOT);
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    for (int i = 0; i < BATCH; i++) {
        iov[i] = (struct iovec){.iov_base = bytes + (size_t)i * SLOT, .iov_len = SLOT};
        memset(&msgs[i], 0, sizeof msgs[i]);
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    long long datagrams = 0, lines = 0;
    double first = 0, last = 0;
    long long pause_ns = (long long)(pause_ms * 1e6);
    const struct timespec pause = {.tv_sec = pause_ns / 1000000000, .tv_nsec = pause_ns % 1000000000};
    // Waits up to 60 s for the first datagram, then 1 s at most for each next one.
    for (double start = now(); first > 0 ? now() - last < 1 : now() - start < 60;) {
        int n = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0) {
            nanosleep(&pause, NULL);
            continue;
        }
        last = now();
        if (first == 0)
            first = last;
        datagrams += n;
        for (int i = 0; i < n; i++) {
            const char *p = iov[i].iov_base, *end = p + msgs[i].msg_len;
            lines++;
            while ((p = memchr(p, '\n', end - p)) != NULL && ++p < end)
                lines++;
        }
        if (last - first >= secs)
            break;
    }
    double took = last - first;
    struct rusage used;
    getrusage(RUSAGE_SELF, &used);
    double cpu = used.ru_utime.tv_sec + used.ru_utime.tv_usec / 1e6 + used.ru_stime.tv_sec +
                 used.ru_stime.tv_usec / 1e6;
    printf("datagrams=%lld lines=%lld seconds=%.3f lines_rate=%.0f cpu_s_per_million=%.3f\n",
           datagrams, lines, took, took > 0 ? lines / took : 0.0,
           lines > 0 ? cpu / lines * 1e6 : 0.0);
    return 0;
}
