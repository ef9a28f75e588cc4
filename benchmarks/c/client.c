/*
 * Load generator for the uringloop benchmark suite (one thread, epoll).
 *
 * Opens --conns TCP connections to 127.0.0.1:--port and keeps --depth
 * requests in flight on each.  Every byte that comes back is checked:
 *
 *   echo: request i on connection c is --size bytes taken at an offset of a
 *         random pattern that depends on (c, i), so a truncated, reordered or
 *         cross-connection echo fails the run;
 *   http: "GET / HTTP/1.1"; each response must be status 200 with a
 *         Content-Length equal to --body's length and exactly that body.
 *
 * Phases: connect; verify (each connection completes --verify requests,
 * counted, not timed); warm-up for --warmup seconds; the timed window of
 * --duration seconds.  At both ends of the window the client samples the
 * server's CPU time (schedstat of every thread of --server-pid, in ns) and
 * its own (getrusage), so CPU per request covers exactly the requests counted.
 * It also samples the CPU time of the whole machine, so that what other
 * processes took meanwhile (other_cpu_s) shows how noisy the window was.
 * The result is one JSON object on stdout; on any failure it is
 * {"ok": false, "error": "..."} and the exit status is 1.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define PATTERN_SPAN (1u << 16)  /* distinct message start offsets */
#define RBUF_SIZE (256u * 1024)
#define HDR_MAX 8192
#define MAX_IOV 64
#define STALL_SECONDS 5.0

enum mode { MODE_ECHO, MODE_HTTP };

struct conn {
    int fd;
    int idx;
    int out_armed;      /* EPOLLOUT registered */
    uint64_t tx_msg;    /* requests fully sent */
    uint64_t rx_msg;    /* responses fully received and verified */
    size_t tx_off;      /* bytes of request tx_msg already sent */
    size_t rx_off;      /* echo: bytes of response rx_msg received */
    uint64_t tx_bytes, rx_bytes;
    /* http response parser */
    char hdr[HDR_MAX];
    size_t hdr_len;
    int crlf_state;     /* how much of "\r\n\r\n" has just been seen */
    int in_body;
    size_t body_left;
};

static struct {
    enum mode mode;
    int port, nconns, depth, cpu;
    size_t size;
    long verify;
    double warmup, duration;
    int server_pid;
    const char *body;
    size_t body_len;
} opt = {MODE_ECHO, 0, 10, 1, -1, 1024, 5, 0.5, 2.0, 0, "Hello, World!", 13};

static const char http_request[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
#define HTTP_REQUEST_LEN (sizeof(http_request) - 1)

static unsigned char *pattern;
static struct conn *conns;
static int epfd;
static uint64_t completed;
static uint64_t send_limit = UINT64_MAX;  /* per connection, while verifying */

static void fail(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    for (char *p = msg; *p; p++)
        if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
            *p = ' ';
    printf("{\"ok\": false, \"error\": \"%s\"}\n", msg);
    exit(1);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double self_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* On-CPU time of the server process, in seconds: the sum of its live
 * threads' schedstat run times (nanoseconds), else utime+stime of
 * /proc/PID/stat (clock ticks, coarse). */
static double server_cpu(void)
{
    char path[64], buf[2048];
    if (opt.server_pid <= 0)
        return -1.0;
    snprintf(path, sizeof path, "/proc/%d/task", opt.server_pid);
    DIR *dir = opendir(path);
    if (dir) {
        unsigned long long total = 0;
        int found = 0;
        struct dirent *de;
        while ((de = readdir(dir)) != NULL) {
            if (de->d_name[0] == '.')
                continue;
            snprintf(buf, sizeof buf, "%s/%s/schedstat", path, de->d_name);
            FILE *f = fopen(buf, "r");
            unsigned long long ns;
            if (f && fscanf(f, "%llu", &ns) == 1) {
                total += ns;
                found = 1;
            }
            if (f)
                fclose(f);
        }
        closedir(dir);
        if (found)
            return (double)total / 1e9;
    }
    snprintf(path, sizeof path, "/proc/%d/stat", opt.server_pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1.0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');  /* the command name may contain spaces */
    unsigned long long utime, stime;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                     &utime, &stime) != 2)
        return -1.0;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* CPU time all processes spent on this machine (non-idle), in seconds: with
 * the server's and ours subtracted, what else ran during the window. */
static double machine_busy_cpu(void)
{
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return -1.0;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                   &v[3], &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n != 8)
        return -1.0;
    /* user nice system [idle iowait] irq softirq steal */
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
}

static const unsigned char *echo_msg(const struct conn *c, uint64_t i)
{
    uint64_t off = ((uint64_t)c->idx * 7919u + i * 104729u) % PATTERN_SPAN;
    return pattern + off;
}

static size_t req_size(void)
{
    return opt.mode == MODE_ECHO ? opt.size : HTTP_REQUEST_LEN;
}

static const void *req_ptr(const struct conn *c, uint64_t i)
{
    return opt.mode == MODE_ECHO ? (const void *)echo_msg(c, i) : (const void *)http_request;
}

static void set_out(struct conn *c, int on)
{
    if (c->out_armed == on)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        fail("epoll_ctl: %s", strerror(errno));
    c->out_armed = on;
}

/* Send as much of the window (up to depth requests ahead) as the socket takes. */
static void pump_send(struct conn *c)
{
    size_t size = req_size();
    for (;;) {
        uint64_t end = c->rx_msg + (uint64_t)opt.depth;
        if (end > send_limit)
            end = send_limit;
        if (c->tx_msg >= end) {
            set_out(c, 0);
            return;
        }
        struct iovec iov[MAX_IOV];
        int n = 0;
        for (uint64_t i = c->tx_msg; i < end && n < MAX_IOV; i++, n++) {
            size_t skip = (i == c->tx_msg) ? c->tx_off : 0;
            iov[n].iov_base = (void *)((const char *)req_ptr(c, i) + skip);
            iov[n].iov_len = size - skip;
        }
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                set_out(c, 1);
                return;
            }
            if (errno == EINTR)
                continue;
            fail("send on connection %d: %s", c->idx, strerror(errno));
        }
        size_t left = (size_t)w;
        c->tx_bytes += left;
        while (left > 0) {
            size_t room = size - c->tx_off;
            size_t k = left < room ? left : room;
            c->tx_off += k;
            left -= k;
            if (c->tx_off == size) {
                c->tx_off = 0;
                c->tx_msg++;
            }
        }
    }
}

static void complete_one(struct conn *c)
{
    c->rx_msg++;
    completed++;
}

static void echo_received(struct conn *c, const unsigned char *data, size_t len)
{
    c->rx_bytes += len;
    if (c->rx_bytes > c->tx_bytes)
        fail("connection %d: server sent bytes nobody asked for", c->idx);
    while (len > 0) {
        size_t k = opt.size - c->rx_off;
        if (k > len)
            k = len;
        if (memcmp(echo_msg(c, c->rx_msg) + c->rx_off, data, k) != 0)
            fail("connection %d: echo of request %llu differs at byte %zu", c->idx,
                 (unsigned long long)c->rx_msg, c->rx_off);
        c->rx_off += k;
        data += k;
        len -= k;
        if (c->rx_off == opt.size) {
            c->rx_off = 0;
            complete_one(c);
        }
    }
}

static void http_headers_done(struct conn *c)
{
    c->hdr[c->hdr_len] = '\0';
    if (strncmp(c->hdr, "HTTP/1.", 7) != 0 || c->hdr_len < 12)
        fail("connection %d: not an HTTP response: %.40s", c->idx, c->hdr);
    if (strncmp(c->hdr + 9, "200", 3) != 0)
        fail("connection %d: HTTP status %.3s, expected 200", c->idx, c->hdr + 9);
    long clen = -1;
    for (char *line = strstr(c->hdr, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
        if (strncasecmp(line + 2, "content-length:", 15) == 0) {
            clen = strtol(line + 17, NULL, 10);
            break;
        }
    }
    if (clen < 0)
        fail("connection %d: response has no Content-Length", c->idx);
    if ((size_t)clen != opt.body_len)
        fail("connection %d: Content-Length %ld, expected %zu", c->idx, clen, opt.body_len);
    c->hdr_len = 0;
    c->crlf_state = 0;
    c->in_body = 1;
    c->body_left = (size_t)clen;
}

static void http_received(struct conn *c, const unsigned char *data, size_t len)
{
    static const char term[] = "\r\n\r\n";
    while (len > 0) {
        if (c->rx_msg >= c->tx_msg)
            fail("connection %d: server sent %zu bytes nobody asked for", c->idx, len);
        if (!c->in_body) {
            if (c->hdr_len + 1 >= HDR_MAX)
                fail("connection %d: response headers over %d bytes", c->idx, HDR_MAX);
            char ch = (char)*data++;
            len--;
            c->hdr[c->hdr_len++] = ch;
            c->crlf_state = (ch == term[c->crlf_state]) ? c->crlf_state + 1
                            : (ch == '\r') ? 1 : 0;
            if (c->crlf_state == 4)
                http_headers_done(c);
        } else {
            size_t k = c->body_left < len ? c->body_left : len;
            size_t at = opt.body_len - c->body_left;
            if (memcmp(opt.body + at, data, k) != 0)
                fail("connection %d: response body differs at byte %zu", c->idx, at);
            c->body_left -= k;
            data += k;
            len -= k;
        }
        if (c->in_body && c->body_left == 0) {
            c->in_body = 0;
            complete_one(c);
        }
    }
}

static void on_readable(struct conn *c)
{
    static unsigned char rbuf[RBUF_SIZE];
    for (;;) {
        ssize_t r = recv(c->fd, rbuf, sizeof rbuf, 0);
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            fail("recv on connection %d: %s", c->idx, strerror(errno));
        }
        if (r == 0)
            fail("connection %d closed by the server", c->idx);
        if (opt.mode == MODE_ECHO)
            echo_received(c, rbuf, (size_t)r);
        else
            http_received(c, rbuf, (size_t)r);
        if ((size_t)r < sizeof rbuf)
            break;
    }
    pump_send(c);
}

static void open_connections(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    conns = calloc((size_t)opt.nconns, sizeof *conns);
    if (!conns)
        fail("out of memory");
    for (int i = 0; i < opt.nconns; i++) {
        struct conn *c = &conns[i];
        c->idx = i;
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        if (c->fd < 0)
            fail("socket: %s", strerror(errno));
        if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0)
            fail("connect %d: %s", i, strerror(errno));
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK) < 0)
            fail("nonblock: %s", strerror(errno));
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
            fail("epoll_ctl: %s", strerror(errno));
    }
}

/* Drive the connections until done() says stop; fail if nothing completes
 * for STALL_SECONDS. */
static void run_until(int (*done)(double t, void *arg), void *arg)
{
    struct epoll_event evs[256];
    uint64_t last_count = completed;
    double last_progress = now();
    for (;;) {
        double t = now();
        if (done(t, arg))
            return;
        if (completed != last_count) {
            last_count = completed;
            last_progress = t;
        } else if (t - last_progress > STALL_SECONDS) {
            fail("no response for %.0f s (%llu completed so far)", STALL_SECONDS,
                 (unsigned long long)completed);
        }
        int n = epoll_wait(epfd, evs, 256, 100);
        if (n < 0 && errno != EINTR)
            fail("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                on_readable(c);
            else if (evs[i].events & EPOLLOUT)
                pump_send(c);
        }
    }
}

static int all_verified(double t, void *arg)
{
    (void)t;
    (void)arg;
    for (int i = 0; i < opt.nconns; i++)
        if (conns[i].rx_msg < (uint64_t)opt.verify)
            return 0;
    return 1;
}

static int deadline_passed(double t, void *arg)
{
    return t >= *(double *)arg;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: client --port P [--mode echo|http] [--conns N] [--size BYTES]\n"
            "              [--depth D] [--verify K] [--warmup S] [--duration S]\n"
            "              [--server-pid PID] [--cpu C] [--body TEXT]\n"
            "--duration 0 stops after verification (nothing is timed).\n");
    exit(2);
}

static void parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i];
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        if (!strcmp(k, "--port")) opt.port = atoi(v);
        else if (!strcmp(k, "--mode")) opt.mode = !strcmp(v, "http") ? MODE_HTTP : MODE_ECHO;
        else if (!strcmp(k, "--conns")) opt.nconns = atoi(v);
        else if (!strcmp(k, "--size")) opt.size = (size_t)atol(v);
        else if (!strcmp(k, "--depth")) opt.depth = atoi(v);
        else if (!strcmp(k, "--verify")) opt.verify = atol(v);
        else if (!strcmp(k, "--warmup")) opt.warmup = atof(v);
        else if (!strcmp(k, "--duration")) opt.duration = atof(v);
        else if (!strcmp(k, "--server-pid")) opt.server_pid = atoi(v);
        else if (!strcmp(k, "--cpu")) opt.cpu = atoi(v);
        else if (!strcmp(k, "--body")) { opt.body = v; opt.body_len = strlen(v); }
        else usage();
    }
    if (opt.port <= 0 || opt.nconns <= 0 || opt.depth <= 0 || opt.size == 0 || opt.verify < 1)
        usage();
}

static void setup(void)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);  /* never outlive the runner */
    if (opt.cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(opt.cpu, &set);
        if (sched_setaffinity(0, sizeof set, &set) < 0)
            fail("sched_setaffinity(%d): %s", opt.cpu, strerror(errno));
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)opt.nconns + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    pattern = malloc(PATTERN_SPAN + opt.size);
    if (!pattern)
        fail("out of memory");
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < PATTERN_SPAN + opt.size; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        pattern[i] = (unsigned char)x;
    }
    epfd = epoll_create1(0);
    if (epfd < 0)
        fail("epoll_create1: %s", strerror(errno));
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    setup();
    open_connections();

    send_limit = (uint64_t)opt.verify;
    for (int i = 0; i < opt.nconns; i++)
        pump_send(&conns[i]);
    run_until(all_verified, NULL);
    uint64_t verified = completed;
    send_limit = UINT64_MAX;
    if (opt.duration <= 0) {
        printf("{\"ok\": true, \"verified\": %llu}\n", (unsigned long long)verified);
        return 0;
    }

    for (int i = 0; i < opt.nconns; i++)
        pump_send(&conns[i]);
    double t_end = now() + opt.warmup;
    run_until(deadline_passed, &t_end);

    double t0 = now(), srv0 = server_cpu(), cli0 = self_cpu(), all0 = machine_busy_cpu();
    uint64_t n0 = completed;
    t_end = t0 + opt.duration;
    run_until(deadline_passed, &t_end);
    double t1 = now(), srv1 = server_cpu(), cli1 = self_cpu(), all1 = machine_busy_cpu();
    uint64_t n = completed - n0;

    double secs = t1 - t0;
    double srv = (srv0 < 0 || srv1 < 0) ? -1.0 : srv1 - srv0;
    double others = (all0 < 0 || all1 < 0 || srv < 0) ? -1.0 : all1 - all0 - srv - (cli1 - cli0);
    printf("{\"ok\": true, \"verified\": %llu, \"requests\": %llu, \"seconds\": %.6f, "
           "\"rps\": %.1f, \"server_cpu_s\": %.4f, \"client_cpu_s\": %.4f, "
           "\"other_cpu_s\": %.4f, \"bytes_per_request\": %zu}\n",
           (unsigned long long)verified, (unsigned long long)n, secs, (double)n / secs, srv,
           cli1 - cli0, others, opt.mode == MODE_ECHO ? opt.size : opt.body_len);
    return 0;
}
