/*
 * loadgen: a closed-loop load generator for AsyncAProto servers (one thread, epoll).
 *
 * Each of --conns connections keeps --depth requests in flight: it writes a request
 * frame, reads reply frames (Content-Length + Protocol-Version 22 + Content-Encoding
 * 0/1 + payload, split across reads or several per read), and writes the next request
 * as soon as a reply is complete. Latency is measured per request, from the write to
 * the last byte of its reply (with --reconnect, from connect() on: one connection
 * per request). Runs for --duration seconds or until --requests replies, and always
 * stops by itself (--timeout).
 *
 * With --v2, requests are AsyncAProto v2 REQUEST frames (Protocol-Version 23, Kind 0,
 * Stream-Id, Deadline-Ms: --deadline-ms, 0 by default): a connection uses Stream-Ids
 * 1..depth, and a REPLY (Kind 1) on Stream-Id s ends the request sent on s (latency from
 * its write), whatever the order of the replies; the next request goes out on s. A reply
 * of another version or kind, on a Stream-Id not in flight, or with a non-zero
 * Deadline-Ms is an error.
 *
 * Build: cc -O2 -o loadgen loadgen.c    (benchmarks/run.py does it on first use)
 * Output: one line of key=value pairs on stdout, the first six always
 *   requests=N seconds=S rps=R p50_us=.. p99_us=.. errors=E p90_us=.. p999_us=.. max_us=.. ...
 * Exit status: 0 when at least one reply arrived, 1 otherwise, 2 for bad arguments.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PROTOCOL_VERSION 22
#define PROTOCOL_V2 23
#define V2_HEADER 11 /* after Content-Length: version, encoding, kind, stream id (4), deadline (4) */
#define KIND_REQUEST 0
#define KIND_REPLY 1
#define MAX_FRAME (64u << 20)        /* a reply larger than 64 MiB is an error, not a buffer */
#define MAX_SAMPLES (64u << 20)      /* latencies kept: 512 MiB at most; more are counted, not kept */
#define CONNECT_GIVE_UP_NS 3000000000LL /* no connection at all within 3 s: no server */

typedef struct {
    int fd;
    int connecting;
    unsigned char *in;       /* bytes read, not yet a whole frame */
    size_t in_len, in_cap;
    size_t out_off, out_len; /* pending part of the request burst (out_buf) */
    int64_t *sent_at;        /* ring of write times of the requests in flight */
    int head, inflight;
    int64_t connect_at;
    unsigned char *out;      /* --v2: this connection's pending request frames (Stream-Ids differ) */
    unsigned char *busy;     /* --v2: busy[s - 1] when Stream-Id s is in flight */
} conn_t;

static struct {
    struct sockaddr_in addr;
    int conns, depth, reconnect, header_size, verbose, v2;
    unsigned long deadline_ms;
    double duration, timeout;
    long long requests;
    const char *expect;
} opt = {.conns = 50, .depth = 1, .header_size = 4};

static int epfd;
static conn_t *conns;
static unsigned char *frame, *burst; /* one request frame; depth + 1 of them back to back */
static size_t frame_len;
static int64_t *samples;
static size_t nsamples, samples_cap;
static long long replies, errors, connects, conn_errors, peer_closes;
static int64_t window_start, window_end;
static int any_connected;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *msg) {
    fprintf(stderr, "loadgen: %s\n", msg);
    exit(2);
}

static void *xrealloc(void *p, size_t n) {
    p = realloc(p, n);
    if (!p) die("out of memory");
    return p;
}

static void usage(int status) {
    fprintf(status ? stderr : stdout,
            "usage: loadgen --port P (--duration S | --requests N) [--host 127.0.0.1] [--conns 50]\n"
            "               [--depth 1] [--payload JSON | --payload-file F] [--enc 0|1] [--reconnect]\n"
            "               [--header-size 4] [--expect TEXT] [--timeout S] [--v2 [--deadline-ms 0]] [-v]\n");
    exit(status);
}

static void put_be32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * (3 - i)));
}

static uint32_t get_be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void build_frame(const unsigned char *payload, size_t n, int enc) {
    size_t head = opt.v2 ? V2_HEADER : 2;
    unsigned long long length = n + head;
    if (opt.header_size < 8 && length >> (8 * opt.header_size)) die("payload too large for --header-size");
    frame_len = (size_t)opt.header_size + head + n;
    frame = xrealloc(NULL, frame_len);
    for (int i = 0; i < opt.header_size; i++) frame[opt.header_size - 1 - i] = (unsigned char)(length >> (8 * i));
    frame[opt.header_size] = opt.v2 ? PROTOCOL_V2 : PROTOCOL_VERSION;
    frame[opt.header_size + 1] = (unsigned char)enc;
    if (opt.v2) {
        frame[opt.header_size + 2] = KIND_REQUEST;
        put_be32(frame + opt.header_size + 3, 0); /* the Stream-Id, set per request */
        put_be32(frame + opt.header_size + 7, (uint32_t)opt.deadline_ms);
    }
    memcpy(frame + opt.header_size + head, payload, n);
    burst = xrealloc(NULL, frame_len * (size_t)(opt.depth + 1));
    for (int i = 0; i <= opt.depth; i++) memcpy(burst + frame_len * (size_t)i, frame, frame_len);
}

static void record(int64_t latency) {
    if (nsamples == samples_cap) {
        if (samples_cap >= MAX_SAMPLES) return;
        samples_cap = samples_cap ? samples_cap * 2 : 65536;
        samples = xrealloc(samples, samples_cap * sizeof *samples);
    }
    samples[nsamples++] = latency;
}

static int in_window(int64_t t) { return t >= window_start && (window_end == 0 || t < window_end); }

static void close_conn(conn_t *c, int lost_is_error) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    if (lost_is_error) errors += c->inflight;
    if (c->busy) memset(c->busy, 0, (size_t)opt.depth);
    c->inflight = c->head = 0;
    c->in_len = c->out_off = c->out_len = 0;
}

static void watch(conn_t *c, int op, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(epfd, op, c->fd, &ev) < 0) die("epoll_ctl failed");
}

/* Write the pending requests; what the socket does not take waits for EPOLLOUT. */
static int flush(conn_t *c) {
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, (opt.v2 ? c->out : burst) + c->out_off, c->out_len - c->out_off);
        if (n < 0) {
            if (errno == EAGAIN) {
                watch(c, EPOLL_CTL_MOD, EPOLLIN | EPOLLOUT);
                return 0;
            }
            return -1;
        }
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    return 0;
}

/* `count` more requests in flight, sent at `t`. */
static int send_requests(conn_t *c, int count, int64_t t) {
    for (int i = 0; i < count; i++) c->sent_at[(c->head + c->inflight + i) % opt.depth] = t;
    c->inflight += count;
    if (c->out_len == 0) {
        c->out_len = frame_len * (size_t)count;
        return flush(c);
    }
    /* A write is pending (EPOLLOUT finishes it). The burst repeats one frame, so the
       pending bytes may start anywhere in its first frame: keep it within depth + 1 frames. */
    size_t pending = c->out_len - c->out_off;
    c->out_off %= frame_len;
    c->out_len = c->out_off + pending + frame_len * (size_t)count;
    return 0;
}

/* --v2: queue a REQUEST on Stream-Id `sid` (free), sent at `t`; the caller flushes. */
static void queue_v2(conn_t *c, int sid, int64_t t) {
    if (c->out_off > 0) { /* keep the pending bytes at the start: depth frames always fit */
        c->out_len -= c->out_off;
        memmove(c->out, c->out + c->out_off, c->out_len);
        c->out_off = 0;
    }
    unsigned char *f = c->out + c->out_len;
    memcpy(f, frame, frame_len);
    put_be32(f + opt.header_size + 3, (uint32_t)sid);
    c->out_len += frame_len;
    c->sent_at[sid - 1] = t;
    c->busy[sid - 1] = 1;
    c->inflight++;
}

/* --v2: send a request on every free Stream-Id (depth in flight again). */
static int refill_v2(conn_t *c, int64_t t) {
    int pending = c->out_len > c->out_off;
    for (int s = 1; s <= opt.depth; s++)
        if (!c->busy[s - 1]) queue_v2(c, s, t);
    return pending ? 0 : flush(c); /* a pending write waits for EPOLLOUT, which sends the rest */
}

static void open_conn(conn_t *c) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die("socket() failed (out of file descriptors?)");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->connect_at = now_ns();
    connects++;
    if (connect(c->fd, (struct sockaddr *)&opt.addr, sizeof opt.addr) < 0 && errno != EINPROGRESS) {
        conn_errors++;
        close_conn(c, 0);
        return;
    }
    c->connecting = 1;
    watch(c, EPOLL_CTL_ADD, EPOLLOUT);
}

static void connected(conn_t *c) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    c->connecting = 0;
    if (err) {
        conn_errors++;
        if (opt.reconnect) errors++;
        close_conn(c, 0);
        return;
    }
    any_connected = 1;
    watch(c, EPOLL_CTL_MOD, EPOLLIN);
    int64_t t = opt.reconnect ? c->connect_at : now_ns();
    if (opt.v2) {
        if (refill_v2(c, t) < 0) close_conn(c, 1);
        return;
    }
    if (send_requests(c, opt.reconnect ? 1 : opt.depth, t) < 0) close_conn(c, 1);
}

/* 1: a whole valid frame of `*size` bytes at `p`; 0: need more bytes; -1: a bad frame. */
static int next_frame(const unsigned char *p, size_t avail, size_t *size) {
    size_t h = (size_t)opt.header_size;
    if (avail < h) return 0;
    unsigned long long length = 0;
    for (size_t i = 0; i < h; i++) length = (length << 8) | p[i];
    if (length < 2 || length > MAX_FRAME) return -1;
    if (avail >= h + 2 && (p[h] != PROTOCOL_VERSION || p[h + 1] > 1)) return -1;
    if (avail < h + length) return 0;
    *size = h + (size_t)length;
    if (opt.expect && !memmem(p + h + 2, (size_t)length - 2, opt.expect, strlen(opt.expect))) return -1;
    return 1;
}

/* --v2: as next_frame, and `*sid` the Stream-Id of a REPLY in flight; -1 for anything else. */
static int next_frame_v2(const conn_t *c, const unsigned char *p, size_t avail, size_t *size, int *sid) {
    size_t h = (size_t)opt.header_size;
    if (avail < h) return 0;
    unsigned long long length = 0;
    for (size_t i = 0; i < h; i++) length = (length << 8) | p[i];
    if (length < V2_HEADER || length > MAX_FRAME) return -1;
    if (avail >= h + 3 && (p[h] != PROTOCOL_V2 || p[h + 1] > 1 || p[h + 2] != KIND_REPLY)) return -1;
    if (avail < h + length) return 0;
    uint32_t s = get_be32(p + h + 3);
    if (s < 1 || s > (uint32_t)opt.depth || !c->busy[s - 1] || get_be32(p + h + 7) != 0) return -1;
    *size = h + (size_t)length;
    *sid = (int)s;
    if (opt.expect && !memmem(p + h + V2_HEADER, (size_t)length - V2_HEADER, opt.expect, strlen(opt.expect))) return -1;
    return 1;
}

/* --v2: the replies in c->in, in any order; then one write of the next requests. */
static void replies_v2(conn_t *c, int eof) {
    size_t pos = 0, size;
    int done = 0, sid = 0;
    int64_t t = now_ns();
    for (;;) {
        int rc = next_frame_v2(c, c->in + pos, c->in_len - pos, &size, &sid);
        if (rc == 0) break;
        if (rc < 0) {
            if (opt.verbose) fprintf(stderr, "loadgen: bad v2 reply (version, kind, Stream-Id not in flight, deadline, or --expect)\n");
            if (c->inflight == 0) errors++; /* else the requests lost with the connection count */
            close_conn(c, 1);
            return;
        }
        c->busy[sid - 1] = 0;
        c->inflight--;
        pos += size;
        done++;
        if (in_window(t)) {
            replies++;
            record(t - c->sent_at[sid - 1]);
        }
    }
    c->in_len -= pos;
    memmove(c->in, c->in + pos, c->in_len);
    if (opt.reconnect && done) {
        close_conn(c, 0);
        return;
    }
    if (eof) {
        peer_closes++;
        close_conn(c, 1);
        return;
    }
    if (done && refill_v2(c, t) < 0) close_conn(c, 1);
}

static void readable(conn_t *c) {
    int eof = 0;
    for (;;) {
        if (c->in_cap - c->in_len < 65536) {
            c->in_cap = c->in_cap * 2 + 65536;
            c->in = xrealloc(c->in, c->in_cap);
        }
        ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
        if (n > 0) {
            c->in_len += (size_t)n;
            continue;
        }
        eof = n == 0 || errno != EAGAIN;
        break;
    }
    if (opt.v2) {
        replies_v2(c, eof);
        return;
    }
    size_t pos = 0, size;
    int done = 0;
    int64_t t = now_ns();
    while (c->inflight > 0) {
        int rc = next_frame(c->in + pos, c->in_len - pos, &size);
        if (rc == 0) break;
        if (rc < 0) {
            if (opt.verbose) fprintf(stderr, "loadgen: bad reply frame (header, or --expect not found)\n");
            close_conn(c, 1);
            return;
        }
        int64_t sent = c->sent_at[c->head];
        c->head = (c->head + 1) % opt.depth;
        c->inflight--;
        pos += size;
        done++;
        if (in_window(t)) {
            replies++;
            record(t - sent);
        }
    }
    c->in_len -= pos;
    memmove(c->in, c->in + pos, c->in_len);
    if (c->inflight == 0 && c->in_len > 0) {
        if (opt.verbose) fprintf(stderr, "loadgen: a reply nobody asked for\n");
        errors++;
        close_conn(c, 1);
        return;
    }
    if (opt.reconnect && done) {
        close_conn(c, 0);
        return;
    }
    if (eof) {
        peer_closes++;
        close_conn(c, 1);
        return;
    }
    if (done && send_requests(c, done, t) < 0) close_conn(c, 1);
}

static int compare(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double percentile_us(double p) {
    if (nsamples == 0) return 0;
    size_t rank = (size_t)(p * (double)nsamples + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > nsamples) rank = nsamples;
    return (double)samples[rank - 1] / 1000.0;
}

static void parse_args(int argc, char **argv) {
    static struct option longs[] = {
        {"host", 1, 0, 'H'},     {"port", 1, 0, 'p'},    {"conns", 1, 0, 'c'},
        {"depth", 1, 0, 'd'},    {"duration", 1, 0, 'D'}, {"requests", 1, 0, 'n'},
        {"payload", 1, 0, 'P'},  {"payload-file", 1, 0, 'f'}, {"enc", 1, 0, 'e'},
        {"reconnect", 0, 0, 'r'}, {"header-size", 1, 0, 's'}, {"expect", 1, 0, 'x'},
        {"timeout", 1, 0, 't'},  {"help", 0, 0, 'h'},     {"v2", 0, 0, '2'},
        {"deadline-ms", 1, 0, 'L'}, {0, 0, 0, 0}};
    const char *host = "127.0.0.1", *payload = "{\"test\": 1}", *file = NULL;
    int port = 0, enc = 0, ch;
    while ((ch = getopt_long(argc, argv, "v", longs, NULL)) != -1) {
        switch (ch) {
        case 'H': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'c': opt.conns = atoi(optarg); break;
        case 'd': opt.depth = atoi(optarg); break;
        case 'D': opt.duration = atof(optarg); break;
        case 'n': opt.requests = atoll(optarg); break;
        case 'P': payload = optarg; break;
        case 'f': file = optarg; break;
        case 'e': enc = atoi(optarg); break;
        case 'r': opt.reconnect = 1; break;
        case 's': opt.header_size = atoi(optarg); break;
        case 'x': opt.expect = optarg; break;
        case 't': opt.timeout = atof(optarg); break;
        case 'v': opt.verbose = 1; break;
        case '2': opt.v2 = 1; break;
        case 'L': opt.deadline_ms = strtoul(optarg, NULL, 10); break;
        case 'h': usage(0); break;
        default: usage(2);
        }
    }
    if (port <= 0 || port > 65535 || opt.conns < 1 || opt.depth < 1 || opt.header_size < 1 || opt.header_size > 8 ||
        (enc != 0 && enc != 1) || (opt.duration <= 0) == (opt.requests <= 0) || opt.deadline_ms > 0xffffffffUL)
        usage(2);
    if (opt.reconnect) opt.depth = 1;
    opt.addr.sin_family = AF_INET;
    opt.addr.sin_port = htons((uint16_t)port);
    if (strcmp(host, "localhost") == 0) host = "127.0.0.1";
    if (inet_pton(AF_INET, host, &opt.addr.sin_addr) != 1 || (ntohl(opt.addr.sin_addr.s_addr) >> 24) != 127)
        die("--host must be an IPv4 loopback address (127.x.y.z)");
    if (opt.timeout <= 0) opt.timeout = opt.duration > 0 ? opt.duration + 10 : 120;
    if (file) {
        FILE *f = fopen(file, "rb");
        if (!f) die("cannot open --payload-file");
        unsigned char *buf = NULL;
        size_t n = 0, cap = 0, got;
        do {
            cap += 65536;
            buf = xrealloc(buf, cap);
            got = fread(buf + n, 1, cap - n, f);
            n += got;
        } while (got > 0);
        fclose(f);
        build_frame(buf, n, enc);
        free(buf);
    } else {
        build_frame((const unsigned char *)payload, strlen(payload), enc);
    }
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    conns = calloc((size_t)opt.conns, sizeof *conns);
    if (epfd < 0 || !conns) die("cannot set up epoll");
    int64_t start = now_ns();
    int64_t hard_stop = start + (int64_t)(opt.timeout * 1e9);
    window_start = start;
    if (opt.duration > 0) window_end = start + (int64_t)(opt.duration * 1e9);
    for (int i = 0; i < opt.conns; i++) {
        conns[i].fd = -1;
        conns[i].sent_at = calloc((size_t)opt.depth, sizeof(int64_t));
        if (opt.v2) {
            conns[i].out = xrealloc(NULL, frame_len * (size_t)opt.depth);
            conns[i].busy = calloc((size_t)opt.depth, 1);
        }
        open_conn(&conns[i]);
    }
    struct epoll_event events[256];
    int timed_out = 0;
    for (;;) {
        int64_t t = now_ns();
        if (window_end && t >= window_end) break;
        if (opt.requests > 0 && replies + errors >= opt.requests) break;
        if (t >= hard_stop) {
            timed_out = 1;
            break;
        }
        if (!any_connected && t - start > CONNECT_GIVE_UP_NS) break;
        int n = epoll_wait(epfd, events, 256, 10);
        for (int i = 0; i < n; i++) {
            conn_t *c = events[i].data.ptr;
            if (c->fd < 0) continue;
            if (c->connecting) {
                connected(c);
            } else {
                if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) readable(c);
                if (c->fd >= 0 && (events[i].events & EPOLLOUT)) {
                    if (flush(c) < 0) close_conn(c, 1);
                    else if (c->out_len == 0) watch(c, EPOLL_CTL_MOD, EPOLLIN);
                }
            }
        }
        for (int i = 0; i < opt.conns; i++) /* closed (reconnect, or lost): open again */
            if (conns[i].fd < 0 && (any_connected || now_ns() - start < CONNECT_GIVE_UP_NS)) open_conn(&conns[i]);
    }
    int64_t end = now_ns();
    double seconds = (double)((window_end && end > window_end ? window_end : end) - window_start) / 1e9;
    long long inflight = 0;
    for (int i = 0; i < opt.conns; i++) {
        inflight += conns[i].inflight;
        if (conns[i].fd >= 0) close(conns[i].fd);
    }
    qsort(samples, nsamples, sizeof *samples, compare);
    double sum = 0;
    for (size_t i = 0; i < nsamples; i++) sum += (double)samples[i];
    printf("requests=%lld seconds=%.3f rps=%.1f p50_us=%.0f p99_us=%.0f errors=%lld p90_us=%.0f p999_us=%.0f "
           "max_us=%.0f mean_us=%.1f conns=%d depth=%d reconnect=%d connects=%lld conn_errors=%lld peer_closes=%lld "
           "inflight_at_end=%lld recorded=%lld timed_out=%d no_server=%d%s\n",
           replies, seconds, seconds > 0 ? (double)replies / seconds : 0.0, percentile_us(0.50), percentile_us(0.99),
           errors, percentile_us(0.90), percentile_us(0.999), percentile_us(1.0),
           nsamples ? sum / (double)nsamples / 1000.0 : 0.0, opt.conns, opt.depth, opt.reconnect, connects,
           conn_errors, peer_closes, inflight, (long long)nsamples, timed_out, !any_connected,
           opt.v2 ? " v2=1" : "");
    return replies > 0 ? 0 : 1;
}
