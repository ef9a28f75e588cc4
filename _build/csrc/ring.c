/*
 * ring.c - io_uring setup, submission, waiting and harvesting through the
 * raw kernel ABI (no liburing).
 *
 * Memory ordering, as Documentation/io_uring and liburing's barrier.h state
 * it: the kernel writes the CQ tail and the SQ head, so we load those with
 * ACQUIRE semantics (everything the kernel wrote before publishing the
 * index is visible after the load).  We write the SQ tail and the CQ head,
 * so we store those with RELEASE semantics (everything we wrote into the
 * SQE, or read out of the CQE, is complete before the kernel sees the new
 * index).
 */
#define _GNU_SOURCE
#include "ul_ring.h"
#include "compat.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define UL_LOAD_ACQUIRE(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define UL_STORE_RELEASE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define UL_READ_ONCE(p) __atomic_load_n((p), __ATOMIC_RELAXED)

/*
 * A registered ring fd is an index into the *registering thread's* table
 * (current->io_uring->registered_rings): the same index names another ring,
 * or nothing, in any other thread, and unregistering from another thread
 * would drop whatever that thread keeps there.  So the ring remembers which
 * thread registered it, and only that thread enters or unregisters through
 * the index; every other thread uses the plain fd.  Threads are told apart
 * by a token handed out once per thread and never reused (a tid or a
 * pthread_t can be reused after a thread exits; the kernel drops an exited
 * thread's registrations).
 */
static __thread uint64_t ul_thread_token;
static uint64_t ul_next_token;

static uint64_t this_thread(void)
{
    uint64_t t = ul_thread_token;
    if (__builtin_expect(t == 0, 0)) {
        t = __atomic_add_fetch(&ul_next_token, 1, __ATOMIC_RELAXED);
        ul_thread_token = t;
    }
    return t;
}

struct ul_ring {
    int dead;                /* set in a forked child: the ring is not ours */
    int ring_fd;
    int reg_index;           /* registered ring fd index, -1 if none */
    uint64_t reg_owner;      /* token of the thread that registered it */
    uint32_t setup_flags;
    uint32_t features;

    /* submission queue */
    unsigned *sq_khead;
    unsigned *sq_ktail;
    unsigned *sq_kflags;
    unsigned *sq_kdropped;
    unsigned sq_mask;
    unsigned sq_entries;
    unsigned sqe_tail;       /* next free SQE (local, published on flush) */
    struct io_uring_sqe *sqes;
    struct __kernel_timespec *sqe_ts; /* per-slot timespecs for TIMEOUT */

    /* completion queue */
    unsigned *cq_khead;
    unsigned *cq_ktail;
    unsigned *cq_koverflow;
    unsigned cq_mask;
    unsigned cq_entries;
    struct io_uring_cqe *cqes;

    /* mappings */
    void *sq_ptr;
    size_t sq_sz;
    void *cq_ptr;
    size_t cq_sz;
    size_t sqes_sz;

    /* reap output */
    ul_cqe *out;
    unsigned out_cap;

    ul_stats stats;
};

static int sys_setup(unsigned entries, struct io_uring_params *p)
{
    long ret = syscall(__NR_io_uring_setup, entries, p);
    return ret < 0 ? -errno : (int)ret;
}

static int sys_enter(ul_ring *r, unsigned to_submit, unsigned min_complete,
                     unsigned flags, void *arg, size_t argsz)
{
    int fd = r->ring_fd;
    if (r->reg_index >= 0 && r->reg_owner == this_thread()) {
        fd = r->reg_index;
        flags |= IORING_ENTER_REGISTERED_RING;
    }
    long ret = syscall(__NR_io_uring_enter, fd, to_submit, min_complete,
                       flags, arg, argsz);
    r->stats.enters++;
    return ret < 0 ? -errno : (int)ret;
}

static int sys_register(int fd, unsigned opcode, void *arg, unsigned nr)
{
    long ret = syscall(__NR_io_uring_register, fd, opcode, arg, nr);
    return ret < 0 ? -errno : (int)ret;
}

static void unmap_all(ul_ring *r)
{
    if (r->sqes && r->sqes != MAP_FAILED)
        munmap(r->sqes, r->sqes_sz);
    if (r->cq_ptr && r->cq_ptr != MAP_FAILED && r->cq_ptr != r->sq_ptr)
        munmap(r->cq_ptr, r->cq_sz);
    if (r->sq_ptr && r->sq_ptr != MAP_FAILED)
        munmap(r->sq_ptr, r->sq_sz);
    r->sqes = NULL;
    r->cq_ptr = NULL;
    r->sq_ptr = NULL;
}

static int map_rings(ul_ring *r, struct io_uring_params *p)
{
    r->sq_sz = p->sq_off.array + p->sq_entries * sizeof(unsigned);
    r->cq_sz = p->cq_off.cqes + p->cq_entries * sizeof(struct io_uring_cqe);
    if (p->features & IORING_FEAT_SINGLE_MMAP) {
        if (r->cq_sz > r->sq_sz)
            r->sq_sz = r->cq_sz;
        r->cq_sz = r->sq_sz;
    }
    r->sq_ptr = mmap(NULL, r->sq_sz, PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_POPULATE, r->ring_fd, IORING_OFF_SQ_RING);
    if (r->sq_ptr == MAP_FAILED)
        return -errno;
    if (p->features & IORING_FEAT_SINGLE_MMAP) {
        r->cq_ptr = r->sq_ptr;
    } else {
        r->cq_ptr = mmap(NULL, r->cq_sz, PROT_READ | PROT_WRITE,
                         MAP_SHARED | MAP_POPULATE, r->ring_fd, IORING_OFF_CQ_RING);
        if (r->cq_ptr == MAP_FAILED)
            return -errno;
    }
    r->sqes_sz = p->sq_entries * sizeof(struct io_uring_sqe);
    r->sqes = mmap(NULL, r->sqes_sz, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_POPULATE, r->ring_fd, IORING_OFF_SQES);
    if (r->sqes == MAP_FAILED)
        return -errno;

    char *sq = r->sq_ptr, *cq = r->cq_ptr;
    r->sq_khead = (unsigned *)(sq + p->sq_off.head);
    r->sq_ktail = (unsigned *)(sq + p->sq_off.tail);
    r->sq_kflags = (unsigned *)(sq + p->sq_off.flags);
    r->sq_kdropped = (unsigned *)(sq + p->sq_off.dropped);
    r->sq_mask = *(unsigned *)(sq + p->sq_off.ring_mask);
    r->sq_entries = p->sq_entries;
    /* Identity mapping of the SQ index array, set once (as liburing does). */
    unsigned *array = (unsigned *)(sq + p->sq_off.array);
    for (unsigned i = 0; i < p->sq_entries; i++)
        array[i] = i;
    r->sqe_tail = *r->sq_ktail;

    r->cq_khead = (unsigned *)(cq + p->cq_off.head);
    r->cq_ktail = (unsigned *)(cq + p->cq_off.tail);
    r->cq_koverflow = (unsigned *)(cq + p->cq_off.overflow);
    r->cq_mask = *(unsigned *)(cq + p->cq_off.ring_mask);
    r->cq_entries = p->cq_entries;
    r->cqes = (struct io_uring_cqe *)(cq + p->cq_off.cqes);
    return 0;
}

int ul_ring_create(ul_ring **out, unsigned sq_entries, unsigned cq_entries,
                   uint32_t setup_flags, unsigned reap_capacity, ul_info *info)
{
    struct io_uring_params p;
    ul_ring *r;
    int fd, err;

    *out = NULL;
    if (sq_entries == 0 || reap_capacity == 0)
        return -EINVAL;
    memset(&p, 0, sizeof(p));
    p.flags = setup_flags;
    if (cq_entries) {
        p.flags |= IORING_SETUP_CQSIZE;
        p.cq_entries = cq_entries;
    }
    fd = sys_setup(sq_entries, &p);
    if (fd < 0)
        return fd;

    r = calloc(1, sizeof(*r));
    if (!r) {
        close(fd);
        return -ENOMEM;
    }
    r->ring_fd = fd;
    r->reg_index = -1;
    r->setup_flags = p.flags;
    r->features = p.features;
    err = map_rings(r, &p);
    if (err == 0) {
        r->out_cap = reap_capacity;
        r->out = calloc(reap_capacity, sizeof(ul_cqe));
        r->sqe_ts = calloc(p.sq_entries, sizeof(struct __kernel_timespec));
        if (!r->out || !r->sqe_ts)
            err = -ENOMEM;
    }
    if (err) {
        ul_ring_forget(r);
        return err;
    }
    if (info) {
        info->sq_entries = p.sq_entries;
        info->cq_entries = p.cq_entries;
        info->setup_flags = p.flags;
        info->features = p.features;
        info->registered_fd = -1;
        info->ring_fd = fd;
    }
    *out = r;
    return 0;
}

int ul_ring_enable(ul_ring *r)
{
    if (r->dead)
        return -EBADFD;
    if (!(r->setup_flags & IORING_SETUP_R_DISABLED))
        return 0;
    int ret = sys_register(r->ring_fd, UL_REGISTER_ENABLE_RINGS, NULL, 0);
    if (ret == 0)
        r->setup_flags &= ~(uint32_t)IORING_SETUP_R_DISABLED;
    return ret;
}

/* struct io_uring_rsrc_update, declared here for headers that lack it. */
struct ul_rsrc_update {
    uint32_t offset;
    uint32_t resv;
    uint64_t data;
};

/* Drop the registered index if the calling thread owns it.  One owned by
 * another thread cannot be dropped from here: it is forgotten, and the
 * kernel releases it (and its reference to the ring) when that thread
 * exits. */
static void unregister_fd(ul_ring *r)
{
    if (r->reg_index < 0)
        return;
    if (r->reg_owner == this_thread()) {
        struct ul_rsrc_update old = {.offset = (uint32_t)r->reg_index};
        sys_register(r->ring_fd, UL_UNREGISTER_RING_FDS, &old, 1);
    }
    r->reg_index = -1;
    r->reg_owner = 0;
}

int ul_ring_register_fd(ul_ring *r)
{
    if (r->dead)
        return -EBADFD;
    if (r->reg_index >= 0 && r->reg_owner == this_thread())
        return r->reg_index;
    unregister_fd(r);
    struct ul_rsrc_update up = {.offset = (uint32_t)-1, .resv = 0, .data = (uint64_t)r->ring_fd};
    int ret = sys_register(r->ring_fd, UL_REGISTER_RING_FDS, &up, 1);
    if (ret != 1)
        return ret < 0 ? ret : -EIO;
    r->reg_index = (int)up.offset;
    r->reg_owner = this_thread();
    return r->reg_index;
}

void ul_ring_forget(ul_ring *r)
{
    if (!r)
        return;
    unmap_all(r);
    if (r->ring_fd >= 0) {
        /* A registered index holds its own reference to the ring file:
         * closing the fd alone would leave the ring alive in the kernel
         * (and the thread's 16 registration slots would run out). */
        unregister_fd(r);
        close(r->ring_fd);
    }
    free(r->out);
    free(r->sqe_ts);
    free(r);
}

void ul_ring_fork_reset(ul_ring *r)
{
    /* In a forked child the mappings are shared with the parent's live
     * ring: drop ours without a single write, and refuse all further use. */
    unmap_all(r);
    if (r->ring_fd >= 0)
        close(r->ring_fd);
    r->ring_fd = -1;
    /* The child has no registered rings (io_uring task context is not
     * inherited); the index may name a ring the child registers later. */
    r->reg_index = -1;
    r->reg_owner = 0;
    r->dead = 1;
}

void ul_ring_destroy(ul_ring *r)
{
    /* ul_ring_forget drops the registered index (when this thread owns it)
     * and closes the fd; nothing else the kernel owns survives the fd. */
    ul_ring_forget(r);
}

ul_cqe *ul_ring_cqes(ul_ring *r)
{
    return r->out;
}

void ul_ring_stats(ul_ring *r, ul_stats *out)
{
    *out = r->stats;
    if (r->dead) {          /* the shared counters are unmapped */
        out->cq_overflow_kernel = 0;
        out->sq_pending = 0;
        return;
    }
    out->cq_overflow_kernel = UL_READ_ONCE(r->cq_koverflow);
    out->sq_pending = r->sqe_tail - UL_LOAD_ACQUIRE(r->sq_khead);
}

int ul_probe(ul_ring *r, uint8_t *supported, unsigned n)
{
    if (r->dead)
        return -EBADFD;
    size_t sz = sizeof(struct io_uring_probe) + 256 * sizeof(struct io_uring_probe_op);
    struct io_uring_probe *probe = calloc(1, sz);
    if (!probe)
        return -ENOMEM;
    int ret = sys_register(r->ring_fd, UL_REGISTER_PROBE, probe, 256);
    if (ret >= 0) {
        unsigned last = probe->ops_len;
        for (unsigned i = 0; i < n; i++)
            supported[i] = (i < last && i <= probe->last_op &&
                            (probe->ops[i].flags & IO_URING_OP_SUPPORTED)) ? 1 : 0;
        ret = (int)probe->last_op;
    }
    free(probe);
    return ret;
}

/* ---- submission ---------------------------------------------------- */

static unsigned sq_pending(ul_ring *r)
{
    return r->sqe_tail - UL_LOAD_ACQUIRE(r->sq_khead);
}

static unsigned flush_sq(ul_ring *r)
{
    /* Publish our tail: SQE contents before the index. */
    UL_STORE_RELEASE(r->sq_ktail, r->sqe_tail);
    return sq_pending(r);
}

int ul_submit(ul_ring *r)
{
    if (r->dead)
        return -EBADFD;
    unsigned n = flush_sq(r);
    if (n == 0)
        return 0;
    unsigned flags = 0;
    if (r->setup_flags & IORING_SETUP_DEFER_TASKRUN)
        flags |= IORING_ENTER_GETEVENTS;   /* run deferred work while we are here */
    int ret = sys_enter(r, n, 0, flags, NULL, 0);
    if (ret > 0)
        r->stats.sqes_submitted += (unsigned)ret;
    return ret;
}

static struct io_uring_sqe *get_sqe(ul_ring *r, int *err)
{
    if (r->dead) {
        *err = -EBADFD;
        return NULL;
    }
    if (r->sqe_tail - UL_LOAD_ACQUIRE(r->sq_khead) >= r->sq_entries) {
        /* SQ full: flush what we have and try again, never drop.  A flush
         * the kernel could not take any of (a signal, -EAGAIN: no memory
         * for requests) is "the SQ stays full": -EBUSY, retry later. */
        r->stats.sq_full_flushes++;
        int ret = ul_submit(r);
        if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
            *err = ret;
            return NULL;
        }
        if (r->sqe_tail - UL_LOAD_ACQUIRE(r->sq_khead) >= r->sq_entries) {
            *err = -EBUSY;
            return NULL;
        }
    }
    struct io_uring_sqe *sqe = &r->sqes[r->sqe_tail & r->sq_mask];
    memset(sqe, 0, sizeof(*sqe));
    r->sqe_tail++;
    return sqe;
}

#define GET_SQE_OR_RETURN(sqe, r)                  \
    int _err = 0;                                   \
    struct io_uring_sqe *sqe = get_sqe((r), &_err); \
    if (!sqe)                                       \
        return _err;

int ul_prep_nop(ul_ring *r, uint64_t ud)
{
    GET_SQE_OR_RETURN(sqe, r);
    sqe->opcode = IORING_OP_NOP;
    sqe->fd = -1;
    sqe->user_data = ud;
    return 0;
}

int ul_prep_rw(ul_ring *r, uint8_t op, int fd, void *addr, uint32_t len,
               uint64_t off, uint32_t op_flags, uint64_t ud)
{
    GET_SQE_OR_RETURN(sqe, r);
    sqe->opcode = op;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)addr;
    sqe->len = len;
    sqe->off = off;
    sqe->rw_flags = op_flags;
    sqe->user_data = ud;
    return 0;
}

int ul_prep_ext(ul_ring *r, uint8_t op, int fd, void *addr, uint32_t len,
                uint64_t off, uint32_t op_flags, uint64_t addr2,
                uint32_t file_index, uint16_t buf_group, uint8_t sqe_flags,
                uint16_t ioprio, uint64_t ud)
{
    GET_SQE_OR_RETURN(sqe, r);
    sqe->opcode = op;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)addr;
    sqe->len = len;
    if (addr2)
        sqe->addr2 = addr2;
    else
        sqe->off = off;
    sqe->rw_flags = op_flags;
    sqe->file_index = file_index;
    sqe->buf_group = buf_group;
    sqe->flags = sqe_flags;
    sqe->ioprio = ioprio;
    sqe->user_data = ud;
    return 0;
}

int ul_prep_recv_multishot(ul_ring *r, int fd, uint16_t bgid,
                           uint32_t msg_flags, uint64_t ud)
{
    GET_SQE_OR_RETURN(sqe, r);
    sqe->opcode = IORING_OP_RECV;
    sqe->fd = fd;
    sqe->msg_flags = msg_flags;
    sqe->ioprio = IORING_RECV_MULTISHOT;
    sqe->flags = IOSQE_BUFFER_SELECT;
    sqe->buf_group = bgid;
    sqe->user_data = ud;
    return 0;
}

int ul_prep_accept(ul_ring *r, int fd, void *addr, void *addrlen,
                   uint32_t flags, int multishot, uint64_t ud)
{
    GET_SQE_OR_RETURN(sqe, r);
    sqe->opcode = IORING_OP_ACCEPT;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)addr;
    sqe->addr2 = (uint64_t)(uintptr_t)addrlen;
    sqe->accept_flags = flags;
    if (multishot)
        sqe->ioprio = IORING_ACCEPT_MULTISHOT;
    sqe->user_data = ud;
    return 0;
}

int ul_prep_poll(ul_ring *r, int fd, uint32_t mask, int multishot, uint64_t ud)
{
    GET_SQE_OR_RETURN(sqe, r);
    sqe->opcode = IORING_OP_POLL_ADD;
    sqe->fd = fd;
    sqe->poll32_events = mask;   /* little-endian hosts only (x86-64, arm64) */
    if (multishot)
        sqe->len = IORING_POLL_ADD_MULTI;
    sqe->user_data = ud;
    return 0;
}

int ul_prep_cancel(ul_ring *r, uint64_t target, int fd, uint32_t flags, uint64_t ud)
{
    GET_SQE_OR_RETURN(sqe, r);
    sqe->opcode = IORING_OP_ASYNC_CANCEL;
    sqe->fd = fd;
    sqe->addr = target;
    sqe->cancel_flags = flags;
    sqe->user_data = ud;
    return 0;
}

int ul_prep_timeout(ul_ring *r, int64_t ns, unsigned count, uint64_t ud)
{
    if (ns < 0)
        return -EINVAL;
    GET_SQE_OR_RETURN(sqe, r);
    /* The kernel reads the timespec while submitting: keep it in a
     * per-slot array that lives as long as the ring. */
    struct __kernel_timespec *ts = &r->sqe_ts[(r->sqe_tail - 1) & r->sq_mask];
    ts->tv_sec = ns / 1000000000LL;
    ts->tv_nsec = ns % 1000000000LL;
    sqe->opcode = IORING_OP_TIMEOUT;
    sqe->fd = -1;
    sqe->addr = (uint64_t)(uintptr_t)ts;
    sqe->len = 1;
    sqe->off = count;
    sqe->user_data = ud;
    return 0;
}

/* ---- completion ---------------------------------------------------- */

int ul_reap(ul_ring *r)
{
    if (r->dead)
        return -EBADFD;
    unsigned head = *r->cq_khead;          /* only we write it */
    unsigned tail = UL_LOAD_ACQUIRE(r->cq_ktail);
    unsigned n = 0;
    while (head != tail && n < r->out_cap) {
        struct io_uring_cqe *c = &r->cqes[head & r->cq_mask];
        r->out[n].user_data = c->user_data;
        r->out[n].res = c->res;
        r->out[n].flags = c->flags;
        n++;
        head++;
    }
    if (n) {
        UL_STORE_RELEASE(r->cq_khead, head);
        r->stats.cqes_reaped += n;
    }
    return (int)n;
}

static int cq_ready(ul_ring *r)
{
    return UL_LOAD_ACQUIRE(r->cq_ktail) != *r->cq_khead;
}

/*
 * One loop iteration's worth of kernel work: submit everything pending,
 * wait up to timeout_ns (<0: forever, 0: not at all) for at least one
 * completion, harvest into the reap array.  Returns the number harvested.
 * must_enter asks for an io_uring_enter even when nothing is pending, so
 * deferred task work runs (DEFER_TASKRUN) while operations are in flight.
 * -EINTR (a signal) and -ETIME (the timeout) are not errors: 0 is returned
 * and the caller's signal handlers run as soon as it is back in Python.
 */
int ul_run(ul_ring *r, int64_t timeout_ns, int must_enter)
{
    if (r->dead)
        return -EBADFD;
    unsigned to_submit = flush_sq(r);
    unsigned sqf = UL_READ_ONCE(r->sq_kflags);
    int need_events = must_enter || (sqf & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW));
    int ret;

    if (timeout_ns == 0 || cq_ready(r)) {
        if (to_submit || need_events) {
            unsigned flags = need_events ? IORING_ENTER_GETEVENTS : 0;
            ret = sys_enter(r, to_submit, 0, flags, NULL, 0);
            if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
                return ret;
            if (ret > 0)
                r->stats.sqes_submitted += (unsigned)ret;
        }
    } else {
        struct __kernel_timespec ts;
        struct io_uring_getevents_arg arg;
        memset(&arg, 0, sizeof(arg));
        arg.sigmask_sz = _NSIG / 8;
        if (timeout_ns > 0) {
            ts.tv_sec = timeout_ns / 1000000000LL;
            ts.tv_nsec = timeout_ns % 1000000000LL;
            arg.ts = (uint64_t)(uintptr_t)&ts;
        }
        ret = sys_enter(r, to_submit, 1, IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG,
                        &arg, sizeof(arg));
        if (ret < 0 && ret != -EINTR && ret != -ETIME && ret != -EAGAIN && ret != -EBUSY)
            return ret;
        if (ret > 0)
            r->stats.sqes_submitted += (unsigned)ret;
    }
    int n = ul_reap(r);
    if (n < (int)r->out_cap && (UL_READ_ONCE(r->sq_kflags) & IORING_SQ_CQ_OVERFLOW)) {
        /* Completions the kernel parked on its overflow list: flushing
         * them needs an enter; nothing is lost (IORING_FEAT_NODROP). */
        r->stats.cq_overflow_flushes++;
        ret = sys_enter(r, 0, 0, IORING_ENTER_GETEVENTS, NULL, 0);
        if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
            /* The n CQEs already harvested are off the ring: report them,
             * the error comes back on the next call. */
            return n > 0 ? n : ret;
        r->out += n;
        r->out_cap -= (unsigned)n;
        int more = ul_reap(r);
        r->out -= n;
        r->out_cap += (unsigned)n;
        n += more;
    }
    return n;
}

/* ---- provided-buffer rings ------------------------------------------ */

struct ul_bufring {
    ul_ring *r;
    struct io_uring_buf_ring *br;
    size_t ring_sz;
    char *mem;
    size_t mem_sz;
    unsigned nbufs;
    unsigned mask;
    unsigned buf_size;
    uint16_t bgid;
    uint16_t tail;
};

/* struct io_uring_buf_reg, declared locally for older headers. */
struct ul_buf_reg {
    uint64_t ring_addr;
    uint32_t ring_entries;
    uint16_t bgid;
    uint16_t flags;
    uint64_t resv[3];
};

static void bufring_put(ul_bufring *b, uint16_t bid, unsigned offset)
{
    struct io_uring_buf *buf = &b->br->bufs[(b->tail + offset) & b->mask];
    buf->addr = (uint64_t)(uintptr_t)(b->mem + (size_t)bid * b->buf_size);
    buf->len = b->buf_size;
    buf->bid = bid;
}

int ul_bufring_create(ul_ring *r, uint16_t bgid, unsigned nbufs,
                      unsigned buf_size, ul_bufring **out)
{
    return ul_bufring_create_partial(r, bgid, nbufs, buf_size, nbufs, out);
}

/* As ul_bufring_create, but only buffers [0, provide) go to the kernel now;
 * the others are the caller's to hand over later (ul_bufring_recycle). */
int ul_bufring_create_partial(ul_ring *r, uint16_t bgid, unsigned nbufs,
                              unsigned buf_size, unsigned provide, ul_bufring **out)
{
    *out = NULL;
    if (r->dead)
        return -EBADFD;
    if (nbufs == 0 || nbufs > 32768 || (nbufs & (nbufs - 1)) || buf_size == 0
            || provide > nbufs)
        return -EINVAL;
    ul_bufring *b = calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    b->r = r;
    b->nbufs = nbufs;
    b->mask = nbufs - 1;
    b->buf_size = buf_size;
    b->bgid = bgid;
    b->ring_sz = nbufs * sizeof(struct io_uring_buf);
    b->br = mmap(NULL, b->ring_sz, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (b->br == MAP_FAILED) {
        free(b);
        return -ENOMEM;
    }
    b->mem_sz = (size_t)nbufs * buf_size;
    b->mem = mmap(NULL, b->mem_sz, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (b->mem == MAP_FAILED) {
        munmap(b->br, b->ring_sz);
        free(b);
        return -ENOMEM;
    }
    struct ul_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)b->br;
    reg.ring_entries = nbufs;
    reg.bgid = bgid;
    int ret = sys_register(r->ring_fd, UL_REGISTER_PBUF_RING, &reg, 1);
    if (ret < 0) {
        munmap(b->mem, b->mem_sz);
        munmap(b->br, b->ring_sz);
        free(b);
        return ret;
    }
    for (unsigned i = 0; i < provide; i++)
        bufring_put(b, (uint16_t)i, i);
    b->tail = (uint16_t)(b->tail + provide);
    UL_STORE_RELEASE(&b->br->tail, b->tail);
    *out = b;
    return 0;
}

/*
 * 0: unregistered and freed.  -EBADFD: the ring was reset in a forked child;
 * the child's copies are freed (the kernel only ever writes the parent's).
 * Any other -errno: the kernel refused to unregister (e.g. -EEXIST, called
 * from a thread other than a SINGLE_ISSUER ring's owner) and may still fill
 * these buffers, so nothing is released; call again from the right thread.
 */
int ul_bufring_destroy(ul_bufring *b)
{
    int ret = -EBADFD;
    if (!b->r->dead) {
        struct ul_buf_reg reg;
        memset(&reg, 0, sizeof(reg));
        reg.bgid = b->bgid;
        ret = sys_register(b->r->ring_fd, UL_UNREGISTER_PBUF_RING, &reg, 1);
        if (ret < 0)
            return ret;
    }
    munmap(b->mem, b->mem_sz);
    munmap(b->br, b->ring_sz);
    free(b);
    return ret < 0 ? ret : 0;
}

/* A bid outside the ring cannot have come from a CQE of this group; putting
 * it back would hand the kernel an address past the buffers.  Ignored. */
void ul_bufring_recycle(ul_bufring *b, uint16_t bid)
{
    if (bid >= b->nbufs)
        return;
    bufring_put(b, bid, 0);
    b->tail++;
    UL_STORE_RELEASE(&b->br->tail, b->tail);
}

void ul_bufring_recycle_many(ul_bufring *b, const uint16_t *bids, unsigned n)
{
    unsigned put = 0;
    for (unsigned i = 0; i < n; i++)
        if (bids[i] < b->nbufs)
            bufring_put(b, bids[i], put++);
    /* One release store publishes all entries written above. */
    b->tail = (uint16_t)(b->tail + put);
    UL_STORE_RELEASE(&b->br->tail, b->tail);
}

int ul_run_recycle(ul_ring *r, int64_t timeout_ns, int must_enter,
                   ul_bufring *br, const uint16_t *bids, unsigned n)
{
    if (n && br)
        ul_bufring_recycle_many(br, bids, n);
    return ul_run(r, timeout_ns, must_enter);
}

char *ul_bufring_base(ul_bufring *b)
{
    return b->mem;
}
