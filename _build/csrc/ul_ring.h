/*
 * ul_ring.h - the one public header of uringloop's C core.
 *
 * The core is deliberately small: it owns ring memory, fills SQEs, submits,
 * waits, harvests CQEs and manages provided-buffer rings.  Every policy
 * decision (what to submit, what a completion means, who owns a buffer)
 * lives in Python.  All functions return 0 / a count on success and -errno
 * on failure; nothing here raises or allocates Python objects.
 *
 * Threading: a ring is driven by exactly one thread at a time (the thread
 * running the event loop).  Nothing here locks.  A registered ring fd is
 * used (and dropped) only by the thread that registered it; other threads
 * enter through the plain fd.
 *
 * After ul_ring_fork_reset every entry point that takes the ring returns
 * -EBADFD (ul_ring_stats reports zeros for the shared counters).
 */
#ifndef UL_RING_H
#define UL_RING_H

#include <stdint.h>
#include <stddef.h>

typedef struct ul_ring ul_ring;
typedef struct ul_bufring ul_bufring;

/* One harvested completion, copied out of the CQ (16 bytes, no padding). */
typedef struct ul_cqe {
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
} ul_cqe;

/* What the kernel granted at setup. */
typedef struct ul_info {
    uint32_t sq_entries;
    uint32_t cq_entries;
    uint32_t setup_flags;   /* flags the ring was actually created with */
    uint32_t features;      /* io_uring_params.features */
    int32_t registered_fd;  /* index of the registered ring fd, -1 if none */
    int32_t ring_fd;
} ul_info;

typedef struct ul_stats {
    uint64_t sqes_submitted;
    uint64_t cqes_reaped;
    uint64_t enters;
    uint64_t sq_full_flushes;
    uint64_t cq_overflow_flushes;
    uint32_t cq_overflow_kernel;   /* the kernel's own dropped-CQE counter */
    uint32_t sq_pending;
} ul_stats;

/* Setup flags uringloop knows how to use, in uapi values. */
#define UL_SETUP_R_DISABLED     (1U << 6)
#define UL_SETUP_SUBMIT_ALL     (1U << 7)
#define UL_SETUP_COOP_TASKRUN   (1U << 8)
#define UL_SETUP_TASKRUN_FLAG   (1U << 9)
#define UL_SETUP_SINGLE_ISSUER  (1U << 12)
#define UL_SETUP_DEFER_TASKRUN  (1U << 13)

/* Ring lifetime. */
int ul_ring_create(ul_ring **out, unsigned sq_entries, unsigned cq_entries,
                   uint32_t setup_flags, unsigned reap_capacity, ul_info *info);
int ul_ring_enable(ul_ring *r);          /* ENABLE_RINGS if R_DISABLED */
int ul_ring_register_fd(ul_ring *r);     /* for the calling thread; index or -errno */
void ul_ring_destroy(ul_ring *r);        /* munmap, unregister, close; caller drained */
void ul_ring_forget(ul_ring *r);         /* the same, without draining */
void ul_ring_fork_reset(ul_ring *r);     /* forked child: drop mappings, refuse use */
ul_cqe *ul_ring_cqes(ul_ring *r);        /* the preallocated reap array */
void ul_ring_stats(ul_ring *r, ul_stats *out);
int ul_probe(ul_ring *r, uint8_t *supported, unsigned n);

/* Submission and completion. */
int ul_submit(ul_ring *r);               /* submit pending, never wait */
int ul_run(ul_ring *r, int64_t timeout_ns, int must_enter);
/* ul_bufring_recycle_many(br, bids, n) (if n), then ul_run(): one call per
 * loop iteration for both. */
int ul_run_recycle(ul_ring *r, int64_t timeout_ns, int must_enter,
                   ul_bufring *br, const uint16_t *bids, unsigned n);
int ul_reap(ul_ring *r);                 /* harvest without entering */

/* SQE preparation: each fills one complete SQE; -EBUSY if the SQ stays full. */
int ul_prep_nop(ul_ring *r, uint64_t ud);
int ul_prep_rw(ul_ring *r, uint8_t op, int fd, void *addr, uint32_t len,
               uint64_t off, uint32_t op_flags, uint64_t ud);
int ul_prep_ext(ul_ring *r, uint8_t op, int fd, void *addr, uint32_t len,
                uint64_t off, uint32_t op_flags, uint64_t addr2,
                uint32_t file_index, uint16_t buf_group, uint8_t sqe_flags,
                uint16_t ioprio, uint64_t ud);
int ul_prep_recv_multishot(ul_ring *r, int fd, uint16_t bgid,
                           uint32_t msg_flags, uint64_t ud);
int ul_prep_accept(ul_ring *r, int fd, void *addr, void *addrlen,
                   uint32_t flags, int multishot, uint64_t ud);
int ul_prep_poll(ul_ring *r, int fd, uint32_t mask, int multishot, uint64_t ud);
int ul_prep_cancel(ul_ring *r, uint64_t target, int fd, uint32_t flags, uint64_t ud);
int ul_prep_timeout(ul_ring *r, int64_t ns, unsigned count, uint64_t ud);

/* Provided-buffer rings. */
int ul_bufring_create(ul_ring *r, uint16_t bgid, unsigned nbufs,
                      unsigned buf_size, ul_bufring **out);
int ul_bufring_create_partial(ul_ring *r, uint16_t bgid, unsigned nbufs,
                              unsigned buf_size, unsigned provide, ul_bufring **out);
int ul_bufring_destroy(ul_bufring *br);  /* -errno other than -EBADFD: nothing freed */
void ul_bufring_recycle(ul_bufring *br, uint16_t bid);   /* bid >= nbufs ignored */
void ul_bufring_recycle_many(ul_bufring *br, const uint16_t *bids, unsigned n);
char *ul_bufring_base(ul_bufring *br);

#endif /* UL_RING_H */
