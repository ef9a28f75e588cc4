/*
 * compat.h - constants newer than the <linux/io_uring.h> the build machine
 * may ship.  Each value is the kernel ABI value; whether the *running*
 * kernel supports it is decided at run time by probing, never here.
 */
#ifndef UL_COMPAT_H
#define UL_COMPAT_H

#include <linux/io_uring.h>

#ifndef IORING_SETUP_SUBMIT_ALL
#define IORING_SETUP_SUBMIT_ALL (1U << 7)
#endif
#ifndef IORING_SETUP_COOP_TASKRUN
#define IORING_SETUP_COOP_TASKRUN (1U << 8)
#endif
#ifndef IORING_SETUP_TASKRUN_FLAG
#define IORING_SETUP_TASKRUN_FLAG (1U << 9)
#endif
#ifndef IORING_SETUP_SINGLE_ISSUER
#define IORING_SETUP_SINGLE_ISSUER (1U << 12)
#endif
#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN (1U << 13)
#endif
#ifndef IORING_SQ_TASKRUN
#define IORING_SQ_TASKRUN (1U << 2)
#endif
#ifndef IORING_SQ_CQ_OVERFLOW
#define IORING_SQ_CQ_OVERFLOW (1U << 1)
#endif
#ifndef IORING_ENTER_REGISTERED_RING
#define IORING_ENTER_REGISTERED_RING (1U << 4)
#endif
#ifndef IORING_RECV_MULTISHOT
#define IORING_RECV_MULTISHOT (1U << 1)
#endif
#ifndef IORING_ACCEPT_MULTISHOT
#define IORING_ACCEPT_MULTISHOT (1U << 0)
#endif
#ifndef IORING_POLL_ADD_MULTI
#define IORING_POLL_ADD_MULTI (1U << 0)
#endif
#ifndef IORING_ASYNC_CANCEL_ALL
#define IORING_ASYNC_CANCEL_ALL (1U << 0)
#endif
#ifndef IORING_ASYNC_CANCEL_FD
#define IORING_ASYNC_CANCEL_FD (1U << 1)
#endif
#ifndef IORING_CQE_F_SOCK_NONEMPTY
#define IORING_CQE_F_SOCK_NONEMPTY (1U << 2)
#endif
#ifndef IORING_CQE_F_NOTIF
#define IORING_CQE_F_NOTIF (1U << 3)
#endif

/* Opcodes appended after the 6.1 UAPI. */
#define UL_OP_WAITID 50   /* 51 is IORING_OP_FUTEX_WAIT */
#define UL_OP_LAST_KNOWN 64

/* io_uring_register opcodes. */
#define UL_REGISTER_PROBE 8
#define UL_REGISTER_ENABLE_RINGS 12
#define UL_REGISTER_RING_FDS 20
#define UL_UNREGISTER_RING_FDS 21
#define UL_REGISTER_PBUF_RING 22
#define UL_UNREGISTER_PBUF_RING 23

#endif /* UL_COMPAT_H */
