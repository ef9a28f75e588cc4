/* What the Python side may see of the C core (cffi cdef: no #if, no #include). */
typedef struct ul_ring ul_ring;
typedef struct ul_bufring ul_bufring;

typedef struct ul_cqe {
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
} ul_cqe;

typedef struct ul_info {
    uint32_t sq_entries;
    uint32_t cq_entries;
    uint32_t setup_flags;
    uint32_t features;
    int32_t registered_fd;
    int32_t ring_fd;
} ul_info;

typedef struct ul_stats {
    uint64_t sqes_submitted;
    uint64_t cqes_reaped;
    uint64_t enters;
    uint64_t sq_full_flushes;
    uint64_t cq_overflow_flushes;
    uint32_t cq_overflow_kernel;
    uint32_t sq_pending;
} ul_stats;

#define UL_SETUP_R_DISABLED ...
#define UL_SETUP_SUBMIT_ALL ...
#define UL_SETUP_COOP_TASKRUN ...
#define UL_SETUP_TASKRUN_FLAG ...
#define UL_SETUP_SINGLE_ISSUER ...
#define UL_SETUP_DEFER_TASKRUN ...

int ul_ring_create(ul_ring **out, unsigned sq_entries, unsigned cq_entries,
                   uint32_t setup_flags, unsigned reap_capacity, ul_info *info);
int ul_ring_enable(ul_ring *r);
int ul_ring_register_fd(ul_ring *r);
void ul_ring_destroy(ul_ring *r);
void ul_ring_forget(ul_ring *r);
void ul_ring_fork_reset(ul_ring *r);
ul_cqe *ul_ring_cqes(ul_ring *r);
void ul_ring_stats(ul_ring *r, ul_stats *out);
int ul_probe(ul_ring *r, uint8_t *supported, unsigned n);

int ul_submit(ul_ring *r);
int ul_run(ul_ring *r, int64_t timeout_ns, int must_enter);
int ul_run_recycle(ul_ring *r, int64_t timeout_ns, int must_enter,
                   ul_bufring *br, const uint16_t *bids, unsigned n);
int ul_reap(ul_ring *r);

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

int ul_bufring_create(ul_ring *r, uint16_t bgid, unsigned nbufs,
                      unsigned buf_size, ul_bufring **out);
int ul_bufring_create_partial(ul_ring *r, uint16_t bgid, unsigned nbufs,
                              unsigned buf_size, unsigned provide, ul_bufring **out);
int ul_bufring_destroy(ul_bufring *br);
void ul_bufring_recycle(ul_bufring *br, uint16_t bid);
void ul_bufring_recycle_many(ul_bufring *br, const uint16_t *bids, unsigned n);
char *ul_bufring_base(ul_bufring *br);
