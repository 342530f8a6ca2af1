// The load generator of tallyd's benchmarks: benches/run.sh and benches/loadgen.sh build it into target/.
// statsd_loadgen: bounded, paced StatsD-over-UDP load generator (loopback only).
//
// Build: gcc -O2 -Wall -o statsd_loadgen statsd_loadgen.c
// Usage: statsd_loadgen [-h 127.0.0.1] [-p 9125] [-n total_lines] [-r lines_per_sec|0=max]
//                       [-k distinct_names] [-o name_offset] [-t c|ms|g] [-P prefix]
//                       [-b max_datagram_bytes] [-T max_seconds]
// Sends lines "<prefix>.<i>:1|c" (or ":12.5|ms", ":1|g") for i = offset + (seq % k),
// packed newline-separated (no trailing newline) into datagrams of <= -b bytes,
// using sendmmsg in batches that hold ~1 ms of traffic at the target rate (64 at max).
// Stops after n lines or T seconds (default 60), whichever comes first.
// Prints one key=value line: lines, datagrams, seconds, achieved rate, send errors.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "monotonic.h"

#define MAXBATCH 64

int main(int argc, char **argv) {
    const char *host = "127.0.0.1", *type = "c", *prefix = NULL;
    int port = 9125, k = 1000, maxbytes = 1400;
    long long total = 1000000, offset = 0;
    double rate = 0, maxsecs = 60;
    int opt;
    while ((opt = getopt(argc, argv, "h:p:n:r:k:o:t:P:b:T:")) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'n': total = atoll(optarg); break;
        case 'r': rate = atof(optarg); break;
        case 'k': k = atoi(optarg); break;
        case 'o': offset = atoll(optarg); break;
        case 't': type = optarg; break;
        case 'P': prefix = optarg; break;
        case 'b': maxbytes = atoi(optarg); break;
        case 'T': maxsecs = atof(optarg); break;
        default:
            fprintf(stderr, "bad args; see source header\n");
            return 2;
        }
    }
    if (strncmp(host, "127.", 4) != 0 && strcmp(host, "::1") != 0) {
        fprintf(stderr, "refusing non-loopback target %s\n", host);
        return 2;
    }
    const char *suffix;
    if (!strcmp(type, "c")) { suffix = ":1|c"; if (!prefix) prefix = "app.req"; }
    else if (!strcmp(type, "ms")) { suffix = ":12.5|ms"; if (!prefix) prefix = "app.lat"; }
    else if (!strcmp(type, "g")) { suffix = ":1|g"; if (!prefix) prefix = "app.gauge"; }
    else { fprintf(stderr, "type must be c, ms or g\n"); return 2; }
    if (maxbytes > 65000 || maxbytes < 64) { fprintf(stderr, "bad -b\n"); return 2; }

    // pre-render the k distinct lines
    char **lines = malloc(sizeof(char *) * k);
    int *lens = malloc(sizeof(int) * k);
    for (int i = 0; i < k; i++) {
        char tmp[256];
        lens[i] = snprintf(tmp, sizeof tmp, "%s.%lld%s", prefix, offset + i, suffix);
        lines[i] = strdup(tmp);
    }

    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) { perror("socket"); return 1; }
    int sndbuf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) { fprintf(stderr, "bad host\n"); return 2; }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) { perror("connect"); return 1; }

    static char bufs[MAXBATCH][65536];
    struct iovec iov[MAXBATCH];
    struct mmsghdr msgs[MAXBATCH];
    int linesin[MAXBATCH];
    memset(msgs, 0, sizeof msgs);

    // lines per datagram (approx) to size batches to ~1 ms of traffic at the target rate
    int avg = 0;
    for (int i = 0; i < k && i < 1000; i++) avg += lens[i] + 1;
    avg /= (k < 1000 ? k : 1000);
    int lpd = maxbytes / avg; if (lpd < 1) lpd = 1;
    int batch = MAXBATCH;
    if (rate > 0) {
        double per_ms = rate / 1000.0 / lpd;
        batch = per_ms < 1 ? 1 : (per_ms > MAXBATCH ? MAXBATCH : (int)(per_ms + 0.5));
    }

    long long sent_lines = 0, sent_dgrams = 0, seq = 0, errs = 0;
    double t0 = now(), deadline = t0 + maxsecs;
    while (sent_lines < total) {
        double t = now();
        if (t > deadline) break;
        if (rate > 0) {
            double allowed = (t - t0) * rate;
            if (sent_lines >= allowed) {
                double wait = (sent_lines - allowed) / rate;
                if (wait > 0.0002) {
                    struct timespec ts = {0, (long)(wait * 1e9 * 0.8)};
                    nanosleep(&ts, NULL);
                }
                continue;
            }
        }
        // fill a batch
        int nb = 0;
        long long remaining = total - sent_lines;
        while (nb < batch && remaining > 0) {
            char *b = bufs[nb];
            int len = 0, cnt = 0;
            while (remaining > 0) {
                int idx = (int)(seq % k);
                int need = lens[idx] + (len ? 1 : 0);
                if (len + need > maxbytes) break;
                if (len) b[len++] = '\n';
                memcpy(b + len, lines[idx], lens[idx]);
                len += lens[idx];
                seq++; cnt++; remaining--;
            }
            iov[nb].iov_base = b;
            iov[nb].iov_len = len;
            msgs[nb].msg_hdr.msg_iov = &iov[nb];
            msgs[nb].msg_hdr.msg_iovlen = 1;
            linesin[nb] = cnt;
            nb++;
        }
        int off = 0;
        while (off < nb) {
            int r = sendmmsg(fd, msgs + off, nb - off, 0);
            if (r < 0) {
                if (errno == EINTR) continue;
                errs++;
                if (errno == ENOBUFS || errno == EAGAIN) { usleep(50); continue; }
                perror("sendmmsg");
                return 1;
            }
            for (int i = 0; i < r; i++) { sent_lines += linesin[off + i]; sent_dgrams++; }
            off += r;
        }
    }
    double el = now() - t0;
    printf("lines=%lld datagrams=%lld seconds=%.3f rate=%.0f lines_per_dgram=%.1f batch=%d send_errors=%lld\n",
           sent_lines, sent_dgrams, el, sent_lines / el, sent_dgrams ? (double)sent_lines / sent_dgrams : 0,
           batch, errs);
    return 0;
}
