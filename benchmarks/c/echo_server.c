/*
 * Reference server for the uringloop benchmark suite: the limit a Python
 * loop is measured against, driven by the same client.
 *
 * One thread, epoll, non-blocking sockets, listening on 127.0.0.1.
 *   echo: every byte read is written back;
 *   http: every request head ("\r\n\r\n"-terminated) gets the canned
 *         hello-world response the Python HTTP servers send.
 * A connection whose peer stops reading keeps its unsent bytes and is not
 * read until they are flushed (back-pressure, as a transport would).
 *
 * Prints {"port": N, "pid": P} on stdout once listening; runs until killed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define RBUF_SIZE (256u * 1024)

static const char http_response[] =
    "HTTP/1.1 200 OK\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Length: 13\r\n"
    "\r\n"
    "Hello, World!";
#define HTTP_RESPONSE_LEN (sizeof(http_response) - 1)

struct conn {
    int fd;
    int crlf_state;     /* http: how much of "\r\n\r\n" was just seen */
    char *pending;      /* bytes the socket did not take yet */
    size_t pend_len, pend_cap;
};

static int http_mode;
static int epfd;
static char rbuf[RBUF_SIZE];
static char wbuf[RBUF_SIZE / 4 * HTTP_RESPONSE_LEN];  /* worst case: "\r\n\r\n" x RBUF/4 */

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void conn_close(struct conn *c)
{
    close(c->fd);  /* also removes it from the epoll set */
    free(c->pending);
    free(c);
}

static void watch(struct conn *c, int op, unsigned events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(epfd, op, c->fd, &ev) < 0)
        die("epoll_ctl");
}

/* Write data (after anything pending); keep the rest. 0 ok, -1 connection dead. */
static int conn_write(struct conn *c, const char *data, size_t len)
{
    if (c->pend_len == 0) {
        while (len > 0) {
            ssize_t w = send(c->fd, data, len, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                return -1;
            }
            data += w;
            len -= (size_t)w;
        }
        if (len == 0)
            return 0;
        watch(c, EPOLL_CTL_MOD, EPOLLOUT);  /* stop reading until flushed */
    }
    if (c->pend_len + len > c->pend_cap) {
        size_t cap = (c->pend_len + len) * 2;
        char *p = realloc(c->pending, cap);
        if (!p)
            die("realloc");
        c->pending = p;
        c->pend_cap = cap;
    }
    memcpy(c->pending + c->pend_len, data, len);
    c->pend_len += len;
    return 0;
}

static int conn_flush(struct conn *c)
{
    size_t off = 0;
    while (off < c->pend_len) {
        ssize_t w = send(c->fd, c->pending + off, c->pend_len - off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return -1;
        }
        off += (size_t)w;
    }
    memmove(c->pending, c->pending + off, c->pend_len - off);
    c->pend_len -= off;
    if (c->pend_len == 0)
        watch(c, EPOLL_CTL_MOD, EPOLLIN);
    return 0;
}

/* Count complete request heads in data and answer each one. */
static int http_received(struct conn *c, const char *data, size_t len)
{
    static const char term[] = "\r\n\r\n";
    size_t out = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = data[i];
        c->crlf_state = (ch == term[c->crlf_state]) ? c->crlf_state + 1
                        : (ch == '\r') ? 1 : 0;
        if (c->crlf_state == 4) {
            c->crlf_state = 0;
            memcpy(wbuf + out, http_response, HTTP_RESPONSE_LEN);
            out += HTTP_RESPONSE_LEN;
        }
    }
    return out ? conn_write(c, wbuf, out) : 0;
}

static int conn_readable(struct conn *c)
{
    for (;;) {
        ssize_t r = recv(c->fd, rbuf, sizeof rbuf, 0);
        if (r < 0)
            return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
        if (r == 0)
            return -1;
        int rc = http_mode ? http_received(c, rbuf, (size_t)r)
                           : conn_write(c, rbuf, (size_t)r);
        if (rc < 0 || c->pend_len > 0 || (size_t)r < sizeof rbuf)
            return rc;
    }
}

static void accept_all(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
                errno == ECONNABORTED)
                return;
            die("accept4");
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (!c)
            die("calloc");
        c->fd = fd;
        watch(c, EPOLL_CTL_ADD, EPOLLIN);
    }
}

static int listen_loopback(void)
{
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (lfd < 0)
        die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 4096) < 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &sl) < 0)
        die("bind/listen");
    printf("{\"port\": %d, \"pid\": %d}\n", ntohs(sa.sin_port), (int)getpid());
    fflush(stdout);
    return lfd;
}

int main(int argc, char **argv)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);  /* never outlive the runner */
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--mode"))
            http_mode = !strcmp(argv[i + 1], "http");
        else if (!strcmp(argv[i], "--cpu")) {
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET(atoi(argv[i + 1]), &set);
            if (sched_setaffinity(0, sizeof set, &set) < 0)
                die("sched_setaffinity");
        } else {
            fprintf(stderr, "usage: echo_server [--mode echo|http] [--cpu C]\n");
            return 2;
        }
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    epfd = epoll_create1(0);
    if (epfd < 0)
        die("epoll_create1");
    int lfd = listen_loopback();
    struct conn listener = {.fd = lfd};
    watch(&listener, EPOLL_CTL_ADD, EPOLLIN);

    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(epfd, evs, 256, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c == &listener) {
                accept_all(lfd);
                continue;
            }
            int rc = (evs[i].events & EPOLLOUT) ? conn_flush(c) : conn_readable(c);
            if (rc < 0)
                conn_close(c);
        }
    }
}
