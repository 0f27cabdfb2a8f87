/* The readers of benchmarks/fanout.py: N connections, each opening one AsyncAProto v2
 * stream, read and counted as cheaply as C allows (one thread, epoll).
 *
 *   fanout_reader --port P --conns N --request JSON --ready JSON --fire JSON --items E
 *                 [--fire-port P2] [--replies] [--timeout S] [--host 127.0.0.1]
 *
 * 1. Opens N connections to --port and writes one v2 REQUEST (Stream-Id 1, --request) on
 *    each; with --replies waits for one REPLY on each (idle v2 connections).
 * 2. On a control connection to --port, sends --ready and waits for its REPLY (the
 *    server answers once every stream is subscribed), then prints "ready" and reads one
 *    line from stdin: "quit" ends here (the driver measured memory), anything else goes on.
 * 3. Sends --fire on a control connection to --fire-port (default --port), starts the
 *    clock, counts ITEM frames on Stream-Id 1 until N * E arrived or --timeout passed.
 *    An ITEM whose payload holds "sent":T (CLOCK_MONOTONIC seconds, Python's
 *    time.monotonic) gives a delivery latency.
 * Prints one line of key=value pairs; every other frame on a stream is an error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CARRY 1024 /* the largest frame a stream may split across reads */
#define V2_HEADER 15

typedef struct {
    int fd;
    int replies;
    size_t have;
    unsigned char carry[CARRY];
} conn_t;

static const char *host = "127.0.0.1", *request = NULL, *ready_req = NULL, *fire_req = NULL;
static int port = 0, fire_port = 0, nconns = 0, want_replies = 0;
static long items = 0;
static double timeout_s = 60.0;
static long delivered = 0, errors = 0;
static double *lat = NULL;
static long nlat = 0, cap_lat = 0;
static double t_fire = 0, t_first = 0, t_last = 0;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *msg) {
    perror(msg);
    exit(2);
}

static size_t frame(unsigned char *out, const char *json, uint32_t sid) {
    size_t n = strlen(json);
    uint32_t len = (uint32_t)n + 11;
    out[0] = len >> 24; out[1] = len >> 16; out[2] = len >> 8; out[3] = len;
    out[4] = 23; out[5] = 0; out[6] = 0; /* v2, JSON, REQUEST */
    out[7] = sid >> 24; out[8] = sid >> 16; out[9] = sid >> 8; out[10] = sid;
    memset(out + 11, 0, 4);
    memcpy(out + V2_HEADER, json, n);
    return n + V2_HEADER;
}

static int dial(int p) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(p)};
    inet_pton(AF_INET, host, &a.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* Closed with a reset when this process exits: a server notices at once (on a FIN,
     * asyncapy keeps a connection with a stream in flight half-open until it writes). */
    struct linger reset = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    for (int tries = 0; connect(fd, (struct sockaddr *)&a, sizeof a) < 0; tries++) {
        if (errno != EINTR || tries > 100) die("connect");
    }
    return fd;
}

static void send_all(int fd, const unsigned char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) die("write");
        p += w;
        n -= (size_t)w;
    }
}

/* One blocking round trip on a control connection: REQUEST, then its REPLY (skipped). */
static void control(int fd, const char *json, uint32_t sid) {
    unsigned char buf[65536];
    size_t n = frame(buf, json, sid);
    send_all(fd, buf, n);
    size_t have = 0;
    for (;;) {
        ssize_t r = read(fd, buf + have, sizeof buf - have);
        if (r <= 0) { fprintf(stderr, "control connection closed before its reply\n"); exit(2); }
        have += (size_t)r;
        if (have >= 4) {
            uint32_t len = (uint32_t)buf[0] << 24 | buf[1] << 16 | buf[2] << 8 | buf[3];
            if (have >= 4 + len) return;
        }
    }
}

static void sample(const unsigned char *payload, size_t n, double t) {
    static const char key[] = "\"sent\":";
    const unsigned char *at = memmem(payload, n, key, sizeof key - 1);
    if (at == NULL) return;
    char num[64];
    size_t off = (size_t)(at - payload) + sizeof key - 1, k = 0;
    while (off < n && k < sizeof num - 1 && strchr("0123456789.eE+- ", payload[off])) num[k++] = (char)payload[off++];
    num[k] = 0;
    double sent = strtod(num, NULL);
    if (sent <= 0) return;
    if (nlat == cap_lat) {
        cap_lat = cap_lat ? cap_lat * 2 : 65536;
        lat = realloc(lat, (size_t)cap_lat * sizeof *lat);
        if (lat == NULL) die("realloc");
    }
    lat[nlat++] = t - sent;
}

/* Frames of one read (after what the connection carried); keeps an incomplete tail. */
static void frames(conn_t *c, unsigned char *p, size_t n, double t) {
    size_t pos = 0;
    while (n - pos >= 4) {
        uint32_t len = (uint32_t)p[pos] << 24 | p[pos + 1] << 16 | p[pos + 2] << 8 | p[pos + 3];
        if (n - pos < 4 + (size_t)len) break;
        const unsigned char *f = p + pos;
        uint32_t sid = len >= 11 ? (uint32_t)f[7] << 24 | f[8] << 16 | f[9] << 8 | f[10] : 0;
        if (len >= 11 && f[4] == 23 && f[6] == 1 && c->replies == 0 && want_replies) {
            c->replies = 1;
        } else if (len >= 11 && f[4] == 23 && f[6] == 2 && sid == 1) {
            delivered++;
            if (t_first == 0) t_first = t;
            t_last = t;
            sample(f + V2_HEADER, len - 11, t);
        } else {
            errors++;
        }
        pos += 4 + len;
    }
    c->have = n - pos;
    if (c->have > CARRY) { fprintf(stderr, "a frame larger than %d bytes\n", CARRY); exit(2); }
    memmove(c->carry, p + pos, c->have);
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double p) {
    if (nlat == 0) return 0;
    long i = (long)(p * nlat);
    return lat[i >= nlat ? nlat - 1 : i] * 1e6;
}

static void args(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--replies")) { want_replies = 1; continue; }
        if (v == NULL) { fprintf(stderr, "%s needs a value\n", a); exit(2); }
        i++;
        if (!strcmp(a, "--port")) port = atoi(v);
        else if (!strcmp(a, "--fire-port")) fire_port = atoi(v);
        else if (!strcmp(a, "--conns")) nconns = atoi(v);
        else if (!strcmp(a, "--items")) items = atol(v);
        else if (!strcmp(a, "--timeout")) timeout_s = atof(v);
        else if (!strcmp(a, "--host")) host = v;
        else if (!strcmp(a, "--request")) request = v;
        else if (!strcmp(a, "--ready")) ready_req = v;
        else if (!strcmp(a, "--fire")) fire_req = v;
        else { fprintf(stderr, "unknown option %s\n", a); exit(2); }
    }
    if (!port || nconns <= 0 || !request || !ready_req || !fire_req) {
        fprintf(stderr, "usage: fanout_reader --port P --conns N --request JSON --ready JSON --fire JSON --items E "
                        "[--fire-port P] [--replies] [--timeout S] [--host H]\n");
        exit(2);
    }
    if (!fire_port) fire_port = port;
}

int main(int argc, char **argv) {
    args(argc, argv);
    double deadline = now() + timeout_s;
    conn_t *conns = calloc((size_t)nconns, sizeof *conns);
    int ep = epoll_create1(0);
    if (conns == NULL || ep < 0) die("setup");
    unsigned char out[4096];
    size_t n = frame(out, request, 1);
    for (int i = 0; i < nconns; i++) {
        conns[i].fd = dial(port);
        send_all(conns[i].fd, out, n);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev) < 0) die("epoll_ctl");
    }
    static unsigned char buf[65536 + CARRY];
    struct epoll_event evs[512];
    long replied = 0, expected = (long)nconns * items;
    int phase = want_replies ? 0 : 1; /* 0: waiting for the replies, 1: ready, 2: counting items */
    while (phase != 3) {
        if (phase == 0 && replied == nconns) phase = 1;
        if (phase == 1) {
            control(dial(port), ready_req, 1);
            printf("ready conns=%d\n", nconns);
            fflush(stdout);
            char line[64] = "";
            if (fgets(line, sizeof line, stdin) == NULL || !strncmp(line, "quit", 4)) return 0;
            int fire = dial(fire_port);
            t_fire = now();
            unsigned char f[4096];
            send_all(fire, f, frame(f, fire_req, 1)); /* its reply is never read: counting is the clock */
            phase = 2;
        }
        if (phase == 2 && delivered >= expected) break;
        double left = deadline - now();
        if (left <= 0) break;
        int k = epoll_wait(ep, evs, 512, left > 1 ? 1000 : (int)(left * 1000) + 1);
        if (k < 0 && errno != EINTR) die("epoll_wait");
        double t = now();
        for (int i = 0; i < k; i++) {
            conn_t *c = evs[i].data.ptr;
            memcpy(buf, c->carry, c->have);
            ssize_t r = read(c->fd, buf + c->have, 65536);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                errors++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                continue;
            }
            int before = c->replies;
            frames(c, buf, c->have + (size_t)r, t);
            replied += c->replies - before;
        }
    }
    double span = t_last > t_fire ? t_last - t_fire : 0;
    if (nlat) qsort(lat, (size_t)nlat, sizeof *lat, cmp);
    printf("conns=%d expected=%ld delivered=%ld errors=%ld seconds=%.6f first_ms=%.3f rate=%.0f"
           " samples=%ld p50_us=%.0f p99_us=%.0f\n",
           nconns, expected, delivered, errors, span, t_first > 0 ? (t_first - t_fire) * 1e3 : 0,
           span > 0 ? delivered / span : 0, nlat, pct(0.5), pct(0.99));
    return delivered >= expected ? 0 : 1;
}
