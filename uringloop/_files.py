"""Asynchronous file I/O as io_uring operations, with no threads.

    async with uringloop.open("data.bin", "rb") as f:
        data = await f.read()

``open()`` returns an object that is both awaitable (``f = await open(...)``)
and an async context manager.  Every I/O call is one or more ring operations
(IORING_OP_OPENAT, READ, WRITE, FSYNC, FTRUNCATE, CLOSE, STATX, RENAMEAT,
UNLINKAT, MKDIRAT) resolved through the proactor's ``FutureOp``/``OpFuture``.
Only a running :class:`uringloop.Loop` has a ring: on any other loop (stock
asyncio, uvloop) and with no running loop at all these functions raise a
``RuntimeError`` naming the problem.  There is deliberately no thread-pool
fallback: use ``aiofiles`` or ``asyncio.to_thread`` there.

Positions and cancellation
==========================

Regular files are read and written with explicit offsets (pread/pwrite
style): the file object keeps its own position and never relies on the
kernel's file offset, so concurrent and cancelled operations cannot move it
behind our back.  Append-mode writes let the kernel append (offset -1 on an
``O_APPEND`` fd); pipes, FIFOs, character devices and sockets use offset -1
(the current position) for everything.

Cancelling a task inside a file method only *requests* cancellation of the
ring operation; the operation keeps its buffers (and the file object, so the
fd) alive until its final completion (design.md section 4).  Outcomes:

* ``open``: if the kernel opened the file anyway, the fd is closed when the
  completion arrives (or right away if it arrived first).  No fd leaks.
* reads: the bytes are dropped and the position is **not** advanced, so a
  retry reads the same bytes again (on a pipe, bytes already consumed by the
  kernel are lost: there is no position to keep).  ``readinto`` reads into a
  buffer the operation owns and copies into the caller's buffer only on
  success, so a cancelled ``readinto`` never writes the caller's buffer late.
* writes: the data may or may not have reached the file; the position is not
  advanced and the unwritten part of the write buffer is kept, so a retry (or
  ``close()``, which flushes) writes the same bytes at the same offset again:
  idempotent for regular files, a possible duplicate in append mode.
* ``close``: the CLOSE operation is never cancelled; the fd is always closed.
* ``stat``/``rename``/``unlink``/``mkdir``: the operation may still happen.

Not everything is a ring operation: ``os.fstat`` on an fd we just opened
(directory check, buffer size, the size hint of ``read()``, ``seek(0, 2)``)
and ``lseek`` after an append are plain syscalls that never wait for the
disk on local file systems.  The explicit ``stat()`` and ``AsyncFile.stat()``
use IORING_OP_STATX.  An opcode the kernel does not offer (probed:
``loop.features.ops``) falls back to the synchronous ``os`` call.
"""

from __future__ import annotations

import asyncio
import codecs
import errno
import io
import locale
import os
import select
import stat as _stat
import warnings
from typing import Any, Callable

from . import _ring
from ._proactor import FutureOp, OpFuture, Proactor
from ._ring import ffi, lib

__all__ = ["AsyncFile", "AsyncTextFile", "open", "stat", "rename", "unlink", "mkdir"]

AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_SYMLINK_NOFOLLOW = 0x100
AT_REMOVEDIR = 0x200
STATX_BASIC_STATS = 0x7FF
FSYNC_DATASYNC = 1
OFF_CURRENT = 2**64 - 1          # offset -1: the file position (pipes, O_APPEND)
_MAX_RW = 1 << 30                 # bytes per read/write operation (SQE len is 32 bits)
_STATX_SIZE = 256
DEFAULT_BUFFER_SIZE = 64 * 1024   # each refill is a ring round trip: larger than io's 8 KiB
_READALL_CHUNK = 1 << 20
_BIG_READ = 1 << 20               # read() of at least this much: no copy of the data

# Buffers the kernel fills completely (or whose tail we never read): no need to
# zero them first (a 64 MiB read would pay a 64 MiB memset).
_alloc = ffi.new_allocator(should_clear_after_alloc=False)
_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT


# -- the ring --------------------------------------------------------------------

def _proactor(what: str) -> Proactor:
    """The running uringloop loop's proactor, or a RuntimeError saying why not."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            f"uringloop.{what}() needs a running uringloop event loop and there is "
            "no running event loop: call it from a coroutine run by "
            "uringloop.run() or asyncio.run(..., loop_factory=uringloop.new_event_loop)"
        ) from None
    proactor = getattr(loop, "_proactor", None)
    if not isinstance(proactor, Proactor):
        raise RuntimeError(
            f"uringloop.{what}() needs a running uringloop event loop, but the running "
            f"loop is {type(loop).__module__}.{type(loop).__qualname__}: file I/O is "
            "done as io_uring operations and only a uringloop loop has a ring (no "
            "thread-pool fallback). Run the program with uringloop.run() or "
            "loop_factory=uringloop.new_event_loop, or use asyncio.to_thread/aiofiles "
            "on other loops")
    if proactor.closed:
        raise RuntimeError("uringloop: the event loop is closed")
    return proactor


def _has(proactor: Proactor, op: str) -> bool:
    return op in proactor.ring.features.ops


def _submit(proactor: Proactor, opcode: int, fd: int, addr: Any, length: int, off: int,
            op_flags: int, keep: Any, convert: Callable[[int], Any] | None = None,
            unwanted: Callable[[int], None] | None = None) -> OpFuture:
    """Prepare one SQE; its FutureOp keeps ``keep`` until the final CQE."""
    fut = proactor.new_future()
    op = FutureOp(fut, keep, convert, unwanted)
    ud = proactor.register(op)
    proactor.submit_prepared(op, lib.ul_prep_ext(
        proactor._ptr, opcode, fd, addr, length & 0xFFFFFFFF, off & 0xFFFFFFFFFFFFFFFF,
        op_flags, 0, 0, 0, 0, 0, ud))
    return proactor.future_op(op)


async def _wait(fut: OpFuture, orphan: Callable[[Any], None] | None = None) -> Any:
    """Await a ring op.  If the task is cancelled after the op succeeded but
    before the task resumed, ``orphan(result)`` cleans the result up (the op's
    own ``unwanted`` covers a completion arriving after the cancel)."""
    try:
        return await fut
    except asyncio.CancelledError:
        if orphan is not None and fut.done() and not fut.cancelled() \
                and fut.exception() is None:
            orphan(fut.result())
        raise


def _path_buf(path: Any) -> tuple[Any, Any]:
    """(path object for errors, NUL-terminated char[] for the kernel)."""
    name = os.fspath(path)
    raw = os.fsencode(name) if isinstance(name, str) else name
    if not isinstance(raw, bytes):
        raise TypeError(f"expected str, bytes or os.PathLike object, not {type(path).__name__}")
    if b"\0" in raw:
        raise ValueError("embedded null byte")
    return name, ffi.new("char[]", raw)


def _error(exc: OSError, *filenames: Any) -> OSError:
    """The OSError (subclass by errno) os.* would raise, with its filename(s)."""
    if exc.errno is None:
        return exc
    if len(filenames) == 2:     # OSError's 4th argument is winerror
        return OSError(exc.errno, os.strerror(exc.errno), filenames[0], None, filenames[1])
    return OSError(exc.errno, os.strerror(exc.errno), *filenames)


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


# -- stat ------------------------------------------------------------------------

def _u(buf: Any, off: int, size: int, signed: bool = False) -> int:
    return int.from_bytes(ffi.buffer(buf + off, size), "little", signed=signed)


def _stat_result(buf: Any) -> os.stat_result:
    """os.stat_result from a struct statx (the fields os.stat fills on Linux)."""
    def ts(off: int) -> tuple[int, int]:
        return _u(buf, off, 8, True), _u(buf, off + 8, 4)
    times = [ts(64 + 16 * 0), ts(64 + 16 * 3), ts(64 + 16 * 2)]   # atime, mtime, ctime
    ns = [s * 1_000_000_000 + n for s, n in times]
    fields: list[Any] = [
        _u(buf, 28, 2),                                   # st_mode
        _u(buf, 32, 8),                                   # st_ino
        os.makedev(_u(buf, 136, 4), _u(buf, 140, 4)),     # st_dev
        _u(buf, 16, 4),                                   # st_nlink
        _u(buf, 20, 4), _u(buf, 24, 4),                   # st_uid, st_gid
        _u(buf, 40, 8),                                   # st_size
        times[0][0], times[1][0], times[2][0],            # integer times
        *(s + n * 1e-9 for s, n in times),               # float times, as os.stat
        ns[0], ns[1], ns[2],                              # *_ns
        _u(buf, 4, 4),                                    # st_blksize
        _u(buf, 48, 8),                                   # st_blocks
        os.makedev(_u(buf, 128, 4), _u(buf, 132, 4)),     # st_rdev
    ]
    fields += [None] * (os.stat_result.n_fields - len(fields))
    return os.stat_result(fields[:os.stat_result.n_fields])


async def _statx(proactor: Proactor, dirfd: int, cpath: Any, flags: int) -> os.stat_result:
    buf = ffi.new("char[]", _STATX_SIZE)
    fut = _submit(proactor, _ring.OP_STATX, dirfd, cpath, STATX_BASIC_STATS,
                  int(ffi.cast("uintptr_t", buf)), flags, (cpath, buf),
                  convert=lambda res: _stat_result(buf))
    return await _wait(fut)   # type: ignore[no-any-return]


async def stat(path: Any, *, follow_symlinks: bool = True) -> os.stat_result:
    """Like :func:`os.stat` (a path, bytes path, path-like or an open fd), as IORING_OP_STATX."""
    proactor = _proactor("stat")
    if isinstance(path, int):
        if not _has(proactor, "statx"):
            return os.stat(path)
        try:
            return await _statx(proactor, path, ffi.new("char[]", b""), AT_EMPTY_PATH)
        except OSError as exc:
            raise _error(exc, path) from None
    name, cpath = _path_buf(path)
    if not _has(proactor, "statx"):
        return os.stat(path, follow_symlinks=follow_symlinks)
    try:
        return await _statx(proactor, AT_FDCWD, cpath,
                            0 if follow_symlinks else AT_SYMLINK_NOFOLLOW)
    except OSError as exc:
        raise _error(exc, name) from None


async def rename(src: Any, dst: Any) -> None:
    """Like :func:`os.rename`, as IORING_OP_RENAMEAT."""
    proactor = _proactor("rename")
    sname, csrc = _path_buf(src)
    dname, cdst = _path_buf(dst)
    if not _has(proactor, "renameat"):
        return os.rename(src, dst)
    # renameat: fd = olddirfd, addr = oldpath, len = newdirfd, addr2 = newpath
    fut = _submit(proactor, _ring.OP_RENAMEAT, AT_FDCWD, csrc, AT_FDCWD,
                  int(ffi.cast("uintptr_t", cdst)), 0, (csrc, cdst))
    try:
        await _wait(fut)
    except OSError as exc:
        raise _error(exc, sname, dname) from None


async def unlink(path: Any) -> None:
    """Like :func:`os.unlink` (files only), as IORING_OP_UNLINKAT."""
    proactor = _proactor("unlink")
    name, cpath = _path_buf(path)
    if not _has(proactor, "unlinkat"):
        return os.unlink(path)
    try:
        await _wait(_submit(proactor, _ring.OP_UNLINKAT, AT_FDCWD, cpath, 0, 0, 0, cpath))
    except OSError as exc:
        raise _error(exc, name) from None


async def mkdir(path: Any, mode: int = 0o777) -> None:
    """Like :func:`os.mkdir`, as IORING_OP_MKDIRAT."""
    proactor = _proactor("mkdir")
    name, cpath = _path_buf(path)
    if not _has(proactor, "mkdirat"):
        return os.mkdir(path, mode)
    try:
        await _wait(_submit(proactor, _ring.OP_MKDIRAT, AT_FDCWD, cpath, mode, 0, 0, cpath))
    except OSError as exc:
        raise _error(exc, name) from None


# -- mode parsing (the checks and messages of the built-in open) ---------------

def _parse_mode(mode: str, buffering: int, encoding: Any, errors: Any,
                newline: Any) -> tuple[bool, bool, bool, bool, bool, int]:
    """-> (text, reading, writing, appending, updating, os flags)."""
    if not isinstance(mode, str):
        raise TypeError(f"open() argument 'mode' must be str, not {type(mode).__name__}")
    if not isinstance(buffering, int):
        raise TypeError(f"'{type(buffering).__name__}' object cannot be interpreted as an integer")
    if encoding is not None and not isinstance(encoding, str):
        raise TypeError(f"open() argument 'encoding' must be str or None, not "
                        f"{type(encoding).__name__}")
    if errors is not None and not isinstance(errors, str):
        raise TypeError(f"open() argument 'errors' must be str or None, not "
                        f"{type(errors).__name__}")
    modes = set(mode)
    if modes - set("axrwb+t") or len(mode) > len(modes):
        raise ValueError(f"invalid mode: '{mode}'")
    creating, reading = "x" in modes, "r" in modes
    writing, appending = "w" in modes, "a" in modes
    updating, text, binary = "+" in modes, "t" in modes, "b" in modes
    if text and binary:
        raise ValueError("can't have text and binary mode at once")
    if creating + reading + writing + appending > 1:
        raise ValueError("must have exactly one of create/read/write/append mode")
    if not (creating or reading or writing or appending):
        raise ValueError("Must have exactly one of create/read/write/append "
                         "mode and at most one plus")
    if binary and encoding is not None:
        raise ValueError("binary mode doesn't take an encoding argument")
    if binary and errors is not None:
        raise ValueError("binary mode doesn't take an errors argument")
    if binary and newline is not None:
        raise ValueError("binary mode doesn't take a newline argument")
    if binary and buffering == 1:
        warnings.warn("line buffering (buffering=1) isn't supported in binary mode, "
                      "the default buffer size will be used", RuntimeWarning, 3)
    if not binary and buffering == 0:
        raise ValueError("can't have unbuffered text I/O")
    if newline is not None:
        if not isinstance(newline, str):
            raise TypeError(f"open() argument 'newline' must be str or None, not "
                            f"{type(newline).__name__}")
        if newline not in ("", "\n", "\r", "\r\n"):
            raise ValueError(f"illegal newline value: {newline}")
    if updating:
        flags = os.O_RDWR
    elif reading:
        flags = os.O_RDONLY
    else:
        flags = os.O_WRONLY
    if writing:
        flags |= os.O_CREAT | os.O_TRUNC
    elif appending:
        flags |= os.O_CREAT | os.O_APPEND
    elif creating:
        flags |= os.O_CREAT | os.O_EXCL
    flags |= os.O_CLOEXEC
    return (not binary, reading or updating, not reading or updating, appending,
            updating, flags)


class _Opener:
    """What :func:`open` returns: awaitable, and an async context manager.

    Nothing is submitted until it is awaited or entered.
    """

    __slots__ = ("_proactor", "_args", "_file")

    def __init__(self, proactor: Proactor, args: tuple[Any, ...]) -> None:
        self._proactor = proactor
        self._args = args
        self._file: AsyncFile | AsyncTextFile | None = None

    def __await__(self) -> Any:
        return _open(self._proactor, *self._args).__await__()

    async def __aenter__(self) -> AsyncFile | AsyncTextFile:
        self._file = await _open(self._proactor, *self._args)
        return self._file

    async def __aexit__(self, *exc: Any) -> None:
        assert self._file is not None
        await self._file.close()


def open(file: Any, mode: str = "r", buffering: int = -1, encoding: str | None = None,
         errors: str | None = None, newline: str | None = None,
         closefd: bool = True) -> _Opener:
    """Open a file for asynchronous I/O on the running uringloop loop.

    Arguments and exceptions are those of the built-in :func:`open`;
    ``await`` the result or use it in ``async with``.  ``file`` may be a
    path (str, bytes, path-like) or an fd (then ``closefd`` applies).  The
    default buffer size is max(64 KiB, st_blksize): each refill is a ring
    round trip.  Raises RuntimeError without a running uringloop loop.
    """
    parsed = _parse_mode(mode, buffering, encoding, errors, newline)
    if parsed[0]:
        encoding = io.text_encoding(encoding, 2)
        if encoding == "locale":
            encoding = locale.getencoding()
        codecs.lookup(encoding)       # LookupError now, before anything is opened
        if errors is None:
            errors = "strict"     # an unknown handler fails on first use, as the built-in's
    if not isinstance(file, (str, bytes, int)) and not hasattr(file, "__fspath__"):
        raise TypeError(f"expected str, bytes or os.PathLike object, not {type(file).__name__}")
    if isinstance(file, bool):
        warnings.warn("bool is used as a file descriptor", RuntimeWarning, 2)
        file = int(file)
    if isinstance(file, int):
        if file < 0:
            raise ValueError("negative file descriptor")
    elif not closefd:
        raise ValueError("Cannot use closefd=False with file name")
    if not isinstance(file, int):
        file = os.fspath(file)     # as the built-in: name and error filenames
    proactor = _proactor("open")
    return _Opener(proactor, (file, mode, buffering, encoding, errors, newline, closefd,
                              parsed))


async def _open(proactor: Proactor, file: Any, mode: str, buffering: int,
                encoding: str | None, errors: str | None, newline: str | None,
                closefd: bool, parsed: tuple[bool, bool, bool, bool, bool, int]
                ) -> AsyncFile | AsyncTextFile:
    text, readable, writable, appending, updating, flags = parsed
    if isinstance(file, int):
        fd = file
    else:
        name, cpath = _path_buf(file)
        try:
            if _has(proactor, "openat"):
                fut = _submit(proactor, _ring.OP_OPENAT, AT_FDCWD, cpath, 0o666, 0, flags,
                              cpath, unwanted=_close_quietly)
                fd = await _wait(fut, _close_quietly)
            else:
                fd = os.open(file, flags, 0o666)
        except OSError as exc:
            raise _error(exc, name) from None
    try:
        st = os.fstat(fd)
        if _stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), file)
        blksize = st.st_blksize
        regular = _stat.S_ISREG(st.st_mode)
        if buffering == 1 and not text:
            buffering = -1
        if buffering < 0 or (buffering == 1 and text):
            size = max(DEFAULT_BUFFER_SIZE, blksize if blksize > 1 else 0)
        else:
            size = buffering
        raw = AsyncFile(proactor, fd, file, mode.replace("t", ""), readable, writable,
                        appending, regular, size if buffering != 0 else 0, closefd)
        if regular and appending:
            raw._pos = st.st_size
        elif regular and isinstance(file, int):
            raw._pos = os.lseek(fd, 0, os.SEEK_CUR)
    except BaseException:
        if not isinstance(file, int):    # an fd the caller gave stays theirs, as in FileIO
            _close_quietly(fd)
        raise
    if not text:
        return raw
    return AsyncTextFile(raw, encoding or "utf-8", errors or "strict", newline,
                         buffering == 1, mode)


# -- binary files -------------------------------------------------------------------

class AsyncFile:
    """A binary file whose I/O is ring operations (see :func:`open`).

    Buffered like ``io.BufferedRandom`` unless opened with ``buffering=0``.
    Methods that do I/O are coroutines; ``tell()``, ``fileno()``,
    ``readable()``... are plain methods.  Not safe for use from several
    tasks at once except ``pread``/``pwrite``; stateful methods are
    serialized by a lock so concurrent callers queue up.

    Ownership: every ring op on the fd holds this object in its ``keep``, so
    the fd cannot be closed by garbage collection while the kernel uses it.
    """

    def __init__(self, proactor: Proactor, fd: int, name: Any, mode: str, readable: bool,
                 writable: bool, appending: bool, regular: bool, buffer_size: int,
                 closefd: bool) -> None:
        self._proactor = proactor
        self._fd = fd
        self.name = name
        self.mode = mode
        self._readable = readable
        self._writable = writable
        self._append = appending
        self._seekable = regular
        self._buffer_size = buffer_size      # 0: unbuffered
        self._closefd = closefd
        self._closed = False
        self._pos = 0                        # raw position (regular files)
        self._rbuf = b""                     # read-ahead
        self._roff = 0
        self._wbuf = bytearray()             # pending writes
        self._lock = asyncio.Lock()

    # -- plumbing --------------------------------------------------------------------

    def __repr__(self) -> str:
        return (f"<uringloop.AsyncFile name={self.name!r} mode={self.mode!r}"
                f"{' closed' if self._closed else ''}>")

    def __del__(self) -> None:
        if getattr(self, "_closed", True):
            return
        self._closed = True
        if self._closefd:
            try:
                warnings.warn(f"unclosed file {self!r}", ResourceWarning, source=self)
            finally:
                # No op on this fd is in flight (each op keeps this object alive).
                _close_quietly(self._fd)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("I/O operation on closed file.")

    def _check(self) -> Proactor:
        """Open, and called from the loop it was opened on."""
        if self._closed:
            raise ValueError("I/O operation on closed file.")
        proactor = self._proactor
        if proactor._loop is not asyncio._get_running_loop():
            raise RuntimeError(
                f"{self!r} belongs to the uringloop loop it was opened on "
                f"({'closed' if proactor.closed else 'not running here'}); use it "
                "from a task of that loop")
        return proactor

    def _check_readable(self) -> Proactor:
        proactor = self._check()
        if not self._readable:
            raise io.UnsupportedOperation("File not open for reading")
        return proactor

    def _check_writable(self) -> Proactor:
        proactor = self._check()
        if not self._writable:
            raise io.UnsupportedOperation("File not open for writing")
        return proactor

    @property
    def closed(self) -> bool:
        return self._closed

    def fileno(self) -> int:
        self._check_open()
        return self._fd

    def readable(self) -> bool:
        self._check_open()
        return self._readable

    def writable(self) -> bool:
        self._check_open()
        return self._writable

    def seekable(self) -> bool:
        self._check_open()
        return self._seekable

    def isatty(self) -> bool:
        self._check_open()
        return os.isatty(self._fd)

    async def __aenter__(self) -> AsyncFile:
        self._check()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __aiter__(self) -> AsyncFile:
        self._check()
        return self

    async def __anext__(self) -> bytes:
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line

    # -- raw operations (explicit offsets; position advanced only on success) ---

    def _offset(self, pos: int | None) -> int:
        if pos is not None:
            return pos
        return self._pos if self._seekable else OFF_CURRENT

    async def _pread(self, n: int, pos: int | None = None, whole: bool = False) -> bytes:
        """One READ of up to n bytes at pos (None: the raw position, advanced).

        ``whole``: the caller expects all n bytes (a large read of a regular
        file); the kernel reads straight into a new bytes object, which is
        returned as is when it is filled (no 2nd copy of a big read).  Until
        then the object is referenced only by this op, as a buffer CPython
        itself fills after PyBytes_FromStringAndSize(NULL, n).
        """
        proactor = self._check_readable()
        n = min(n, _MAX_RW)
        if n <= 0:
            return b""
        if whole:
            out = bytes(n)     # calloc'd: fresh zero pages, no memset
            buf = ffi.from_buffer("char[]", out)
            convert: Callable[[int], bytes] = \
                lambda res: out if res == n else out[:res]   # noqa: E731
        else:
            buf = _alloc("char[]", n)
            convert = lambda res: ffi.buffer(buf, res)[:]   # noqa: E731
        while True:
            fut = _submit(proactor, _ring.OP_READ, self._fd, buf, n, self._offset(pos), 0,
                          (self, buf), convert=convert)
            try:
                data: bytes = await _wait(fut)
                break
            except BlockingIOError:
                # An O_NONBLOCK pipe or socket: the kernel answers EAGAIN rather
                # than waiting; wait for readiness on the ring and try again.
                if self._seekable:
                    raise
                await proactor.poll(self._fd, _POLLIN)
        if pos is None and self._seekable:
            self._pos += len(data)
        return data

    async def _pwrite_all(self, data: bytes, pos: int | None = None) -> None:
        """WRITE all of data (bytes: immutable while in flight)."""
        proactor = self._check_writable()
        append = self._append
        view = memoryview(data)      # slices share data's memory: no copies on short writes
        done = 0
        while done < len(data):
            chunk = view[done:done + _MAX_RW] if done or len(data) > _MAX_RW else data
            cbuf = ffi.from_buffer(chunk)
            if pos is not None:
                off = pos + done
            elif append or not self._seekable:
                off = OFF_CURRENT
            else:
                off = self._pos
            fut = _submit(proactor, _ring.OP_WRITE, self._fd, cbuf, len(chunk), off, 0,
                          (self, chunk, cbuf))
            try:
                n: int = await _wait(fut)
            except BlockingIOError:
                if self._seekable:
                    raise
                await proactor.poll(self._fd, _POLLOUT)   # O_NONBLOCK: see _pread
                continue
            if n == 0:
                raise OSError(errno.EIO, "write() returned 0 bytes")
            done += n
            if pos is None and self._seekable:
                if append:
                    self._pos = os.lseek(self._fd, 0, os.SEEK_CUR)
                else:
                    self._pos += n
            if pos is None and self._wbuf_owned is not None:
                del self._wbuf_owned[:n]

    _wbuf_owned: bytearray | None = None

    # -- buffering ---------------------------------------------------------------------

    def _unread(self) -> int:
        return len(self._rbuf) - self._roff

    def _take(self, n: int = -1) -> bytes:
        rbuf, off = self._rbuf, self._roff
        if n < 0 or off + n >= len(rbuf):
            data = rbuf[off:] if off else rbuf
            self._rbuf, self._roff = b"", 0
        else:
            data = rbuf[off:off + n]
            self._roff = off + n
        return data

    def _drop_read_ahead(self) -> None:
        """Forget read-ahead, moving the raw position back to the logical one."""
        if self._rbuf:
            if self._seekable:
                self._pos -= self._unread()
            self._rbuf, self._roff = b"", 0

    async def _flush_unlocked(self) -> None:
        if self._wbuf:
            # The bytes handed to the kernel are an immutable snapshot; what was
            # written is removed from the buffer only after each completion, so
            # a cancelled flush keeps the rest for the next one.
            self._wbuf_owned = self._wbuf
            try:
                await self._pwrite_all(bytes(self._wbuf))
            finally:
                self._wbuf_owned = None

    async def _fill(self) -> bool:
        """Read one buffer's worth at the raw position; False at EOF."""
        # Never less than 8 KiB: a refill is a ring round trip (writes honour
        # a small buffer size exactly).
        data = await self._pread(max(self._buffer_size, 8192) if self._buffer_size
                                 else DEFAULT_BUFFER_SIZE)
        if not data:
            return False
        if self._rbuf:
            self._rbuf = self._rbuf[self._roff:] + data
        else:
            self._rbuf = data
        self._roff = 0
        return True

    async def _read_all(self) -> bytes:
        chunks = [self._take()] if self._rbuf else []
        if self._seekable:
            size = max(os.fstat(self._fd).st_size - self._pos, 0)
            if _BIG_READ <= size <= _MAX_RW:
                # Straight into the bytes object returned; then one small read
                # to see EOF (or that the file grew).
                data = await self._pread(size, whole=True)
                chunks.append(data)
                want = DEFAULT_BUFFER_SIZE if len(data) == size else 0
            else:
                # The size is a hint: one byte more sees EOF in the same op.
                want = size + 1
        else:
            want = DEFAULT_BUFFER_SIZE
        while want:
            data = await self._pread(want)
            if not data:
                break
            chunks.append(data)
            if self._seekable and len(data) < want:
                break      # a short read of a regular file: end of file
            want = _READALL_CHUNK
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)

    # -- reading -----------------------------------------------------------------------

    async def read(self, size: int | None = -1) -> bytes:
        """Read up to size bytes (all until EOF if size is negative or None)."""
        self._check_readable()
        if size is None:
            size = -1
        async with self._lock:
            await self._flush_unlocked()
            if size < 0:
                return await self._read_all()
            if self._buffer_size == 0:
                return await self._pread(size)     # unbuffered: one read, like FileIO
            if self._unread() >= size:
                return self._take(size)
            chunks = [self._take()] if self._rbuf else []
            got = len(chunks[0]) if chunks else 0
            while got < size:
                need = size - got
                if need >= self._buffer_size:
                    data = await self._pread(need)
                    if not data:
                        break
                    chunks.append(data)
                    got += len(data)
                else:
                    if not await self._fill():
                        break
                    data = self._take(need)
                    chunks.append(data)
                    got += len(data)
            return b"".join(chunks)

    async def read1(self, size: int = -1) -> bytes:
        """At most one ring read: what is buffered, or one read of up to size bytes."""
        self._check_readable()
        async with self._lock:
            await self._flush_unlocked()
            if self._buffer_size == 0:
                return await self._pread(size if size >= 0 else DEFAULT_BUFFER_SIZE)
            if not self._rbuf and size != 0 and not await self._fill():
                return b""
            return self._take(size)

    async def readinto(self, buffer: Any) -> int:
        """Read into a writable buffer; return the number of bytes.

        The kernel reads into a buffer this operation owns; the caller's buffer
        is written only when the read succeeds (never late, after cancellation).
        """
        with memoryview(buffer) as view:
            if view.readonly:
                raise TypeError("readinto() argument must be read-write bytes-like object")
            target = view.cast("B")
            data = await self.read(len(target)) if self._buffer_size else \
                await self._unbuffered_read(len(target))
            target[:len(data)] = data
            return len(data)

    async def _unbuffered_read(self, n: int) -> bytes:
        async with self._lock:
            return await self._pread(n)

    async def readline(self, size: int | None = -1) -> bytes:
        """Read up to and including b'\\n' (or size bytes, or to EOF)."""
        self._check_readable()
        if size is None:
            size = -1
        async with self._lock:
            await self._flush_unlocked()
            chunks: list[bytes] = []
            got = 0
            while True:
                if self._rbuf:
                    end = self._rbuf.find(b"\n", self._roff) + 1
                    if end:
                        n = end - self._roff
                        if size >= 0 and got + n > size:
                            n = size - got
                        chunks.append(self._take(n))
                        break
                    if size >= 0 and got + self._unread() >= size:
                        chunks.append(self._take(size - got))
                        break
                    data = self._take()
                    chunks.append(data)
                    got += len(data)
                if size >= 0 and got >= size:
                    break
                if not await self._fill():
                    break
            return b"".join(chunks)

    async def readlines(self, hint: int = -1) -> list[bytes]:
        lines = []
        total = 0
        async for line in self:
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    async def pread(self, size: int, offset: int) -> bytes:
        """Read up to size bytes at offset (one read; the position is unchanged).

        Bypasses (but first flushes) this object's buffers, like os.pread.
        Safe to run concurrently from many tasks.
        """
        self._check_readable()
        if not self._seekable:
            raise OSError(errno.ESPIPE, os.strerror(errno.ESPIPE))
        if offset < 0:
            raise ValueError("negative offset")
        if self._wbuf:
            await self.flush()
        return await self._pread(size, offset)

    # -- writing -------------------------------------------------------------------------

    async def write(self, data: Any) -> int:
        """Write a bytes-like object; return its length (everything is written)."""
        self._check_writable()
        if isinstance(data, str):
            raise TypeError("a bytes-like object is required, not 'str'")
        b = bytes(data)        # a private immutable copy: safe while in flight
        async with self._lock:
            self._drop_read_ahead()
            if self._append and self._seekable and not self._wbuf:
                # The kernel appends: buffered bytes will land at the end.
                self._pos = os.fstat(self._fd).st_size
            if self._buffer_size == 0 or (not self._wbuf and len(b) >= self._buffer_size):
                await self._pwrite_all(b)     # nothing to coalesce with: no copy
            else:
                self._wbuf += b
                if len(self._wbuf) >= self._buffer_size:
                    await self._flush_unlocked()
            return len(b)

    async def writelines(self, lines: Any) -> None:
        for line in lines:
            await self.write(line)

    async def pwrite(self, data: Any, offset: int) -> int:
        """Write all of data at offset (the position is unchanged); return its length.

        Flushes pending writes and drops read-ahead first.  On an O_APPEND
        file Linux appends regardless of offset (as pwrite(2) does).
        """
        self._check_writable()
        if not self._seekable:
            raise OSError(errno.ESPIPE, os.strerror(errno.ESPIPE))
        if offset < 0:
            raise ValueError("negative offset")
        b = bytes(data)
        if self._wbuf or self._rbuf:
            async with self._lock:
                await self._flush_unlocked()
                self._drop_read_ahead()
        await self._pwrite_all(b, offset)
        return len(b)

    async def flush(self) -> None:
        """Write the buffered data to the file (not to the disk: see fsync)."""
        self._check()
        async with self._lock:
            await self._flush_unlocked()

    async def fsync(self, datasync: bool = False) -> None:
        """Flush, then IORING_OP_FSYNC (fdatasync if datasync)."""
        proactor = self._check()
        async with self._lock:
            await self._flush_unlocked()
            if not _has(proactor, "fsync"):
                (os.fdatasync if datasync else os.fsync)(self._fd)
                return
            await _wait(_submit(proactor, _ring.OP_FSYNC, self._fd, ffi.NULL, 0, 0,
                                FSYNC_DATASYNC if datasync else 0, self))

    async def truncate(self, size: int | None = None) -> int:
        """Resize the file to size (default: the position); the position is unchanged."""
        proactor = self._check_writable()
        async with self._lock:
            await self._flush_unlocked()
            if size is None:
                size = self._tell()
            if size < 0:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
            self._drop_read_ahead()
            if _has(proactor, "ftruncate"):
                await _wait(_submit(proactor, _ring.OP_FTRUNCATE, self._fd, ffi.NULL, 0,
                                    size, 0, self))
            else:
                os.ftruncate(self._fd, size)
            return size

    # -- position ------------------------------------------------------------------------

    def _tell(self) -> int:
        if not self._seekable:
            raise OSError(errno.ESPIPE, os.strerror(errno.ESPIPE))
        return self._pos - self._unread() + len(self._wbuf)

    def tell(self) -> int:
        """The position (plain method: no I/O)."""
        self._check_open()
        return self._tell()

    async def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move the position (flushing pending writes first); return it."""
        self._check()
        if whence not in (os.SEEK_SET, os.SEEK_CUR, os.SEEK_END):
            raise ValueError(f"whence value {whence} unsupported")
        if not self._seekable:
            raise OSError(errno.ESPIPE, os.strerror(errno.ESPIPE))
        async with self._lock:
            await self._flush_unlocked()
            if whence == os.SEEK_SET:
                target = offset
            elif whence == os.SEEK_CUR:
                target = self._tell() + offset
            else:
                target = os.fstat(self._fd).st_size + offset
            if target < 0:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
            self._rbuf, self._roff = b"", 0
            self._pos = target
            return target

    async def stat(self) -> os.stat_result:
        """os.fstat of this file, as IORING_OP_STATX."""
        proactor = self._check()
        if not _has(proactor, "statx"):
            return os.fstat(self._fd)
        return await _statx(proactor, self._fd, ffi.new("char[]", b""), AT_EMPTY_PATH)

    # -- closing -------------------------------------------------------------------------

    async def close(self) -> None:
        """Flush, then close the fd (IORING_OP_CLOSE).  Idempotent.

        The close itself is not cancellable: a cancelled close() still closes the fd.
        """
        if self._closed:
            return
        try:
            if self._wbuf:
                async with self._lock:
                    await self._flush_unlocked()
        finally:
            if not self._closed:
                self._closed = True
                if self._closefd:
                    await self._close_fd()

    async def _close_fd(self) -> None:
        proactor = self._proactor
        if proactor.closed or not _has(proactor, "close"):
            if not proactor.closed:
                proactor.flush()     # a prepared SQE naming this fd goes first
            os.close(self._fd)
            return
        # A plain future, not an OpFuture: cancelling the awaiting task cancels
        # only the wait, never the CLOSE itself (the fd is always closed).
        fut = proactor._loop.create_future()   # type: ignore[union-attr]
        op = FutureOp(fut, self)
        ud = proactor.register(op)
        proactor.submit_prepared(op, lib.ul_prep_ext(
            proactor._ptr, _ring.OP_CLOSE, self._fd, ffi.NULL, 0, 0, 0, 0, 0, 0, 0, 0, ud))
        await fut


# -- text files ------------------------------------------------------------------------

class AsyncTextFile:
    """A text file over an :class:`AsyncFile` (what the built-in open's 'r'/'w'... give).

    Decoding is ``codecs`` incremental decoders with ``io.IncrementalNewlineDecoder``
    for universal newlines, as ``io.TextIOWrapper`` does.  ``tell()`` returns
    the byte position of the next character (an opaque cookie for
    ``seek()``, as with the built-in); it is exact for the usual encodings
    (UTF-8, Latin-1, ASCII, cp1252, UTF-16 in native byte order) and raises
    OSError where the decoder holds state a byte offset cannot carry.
    """

    _CHUNK = 8192

    def __init__(self, binary: AsyncFile, encoding: str, errors: str, newline: str | None,
                 line_buffering: bool, mode: str) -> None:
        self.buffer = binary
        self.encoding = encoding
        self.errors = errors
        self.mode = mode
        self.line_buffering = line_buffering
        self._readuniversal = not newline
        self._readtranslate = newline is None
        self._readnl = newline
        self._writetranslate = newline != ""
        self._writenl = newline or os.linesep
        self._decoded = ""
        self._doff = 0
        self._snapshot: tuple[int, Any, bytes] | None = None
        self._decoder: Any = None
        self._encoder: Any = None
        if binary._writable:
            self._encoder = codecs.getincrementalencoder(encoding)(errors)
            if binary._seekable and binary._pos != 0:
                self._encoder.setstate(0)   # appending: no second BOM
        if binary._readable:
            decoder: Any = codecs.getincrementaldecoder(encoding)(errors)
            if self._readuniversal:
                decoder = io.IncrementalNewlineDecoder(decoder, self._readtranslate)
            self._decoder = decoder

    @property
    def name(self) -> Any:
        return self.buffer.name

    @property
    def newlines(self) -> Any:
        return getattr(self._decoder, "newlines", None)

    @property
    def closed(self) -> bool:
        return self.buffer.closed

    def __repr__(self) -> str:
        return (f"<uringloop.AsyncTextFile name={self.name!r} mode={self.mode!r} "
                f"encoding={self.encoding!r}{' closed' if self.closed else ''}>")

    def fileno(self) -> int:
        return self.buffer.fileno()

    def readable(self) -> bool:
        return self.buffer.readable()

    def writable(self) -> bool:
        return self.buffer.writable()

    def seekable(self) -> bool:
        return self.buffer.seekable()

    def isatty(self) -> bool:
        return self.buffer.isatty()

    async def __aenter__(self) -> AsyncTextFile:
        self.buffer._check()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __aiter__(self) -> AsyncTextFile:
        self.buffer._check()
        return self

    async def __anext__(self) -> str:
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line

    # -- reading -------------------------------------------------------------------------

    def _check_readable(self) -> None:
        self.buffer._check()
        if self._decoder is None:
            raise io.UnsupportedOperation("not readable")

    def _take(self, n: int = -1) -> str:
        s, off = self._decoded, self._doff
        if n < 0 or off + n >= len(s):
            self._doff = len(s)     # all consumed (tell() still needs the count)
            return s[off:] if off else s
        self._doff = off + n
        return s[off:off + n]

    async def _read_chunk(self) -> bool:
        """Decode one more chunk into the (empty) decoded buffer; False at EOF."""
        binary = self.buffer
        if binary._wbuf:
            await binary.flush()
        pos = binary._tell() if binary._seekable else 0
        state = self._decoder.getstate()
        raw = await binary.read1(self._CHUNK)
        self._snapshot = (pos, state, raw)
        self._decoded = self._decoder.decode(raw, final=not raw)
        self._doff = 0
        return bool(raw)

    async def read(self, size: int | None = -1) -> str:
        self._check_readable()
        if size is None:
            size = -1
        if size < 0:
            rest = self._take()
            raw = await self.buffer.read()
            text: str = rest + self._decoder.decode(raw, final=True)
            self._snapshot = None
            return text
        parts: list[str] = []
        got = 0
        while got < size:
            if self._doff >= len(self._decoded):
                if not await self._read_chunk() and not self._decoded:
                    break
            piece = self._take(size - got)
            parts.append(piece)
            got += len(piece)
        return "".join(parts)

    def _find_eol(self, s: str, start: int) -> int:
        """Index just past the first line ending in s[start:], or -1."""
        if self._readtranslate:
            i = s.find("\n", start)
            return i + 1 if i >= 0 else -1
        if self._readuniversal:
            # newline='': any of \r, \n, \r\n ends a line, untranslated.
            n = s.find("\n", start)
            r = s.find("\r", start)
            if r < 0 or (0 <= n < r):
                return n + 1 if n >= 0 else -1
            # The decoder holds back a trailing \r until it has seen what
            # follows, so a \r at the end of the buffer is the end of the file.
            if r + 1 < len(s):
                return r + 2 if s[r + 1] == "\n" else r + 1
            return r + 1
        nl = self._readnl
        assert nl is not None
        i = s.find(nl, start)
        return i + len(nl) if i >= 0 else -1

    async def readline(self, size: int | None = -1) -> str:
        self._check_readable()
        if size is None:
            size = -1
        parts: list[str] = []
        got = 0
        crlf = self._readnl == "\r\n"
        while size < 0 or got < size:
            s, start = self._decoded, self._doff
            if start < len(s):
                if crlf and parts and parts[-1].endswith("\r") and s[start] == "\n":
                    parts.append(self._take(1))     # a \r\n split between chunks
                    break
                end = self._find_eol(s, start)
                n = end - start if end >= 0 else len(s) - start
                if size >= 0:
                    n = min(n, size - got)
                piece = self._take(n)
                parts.append(piece)
                got += len(piece)
                if end >= 0 and n == end - start:
                    break
                continue
            if not await self._read_chunk() and not self._decoded:
                break
        return "".join(parts)

    async def readlines(self, hint: int = -1) -> list[str]:
        lines = []
        total = 0
        async for line in self:
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    # -- writing -------------------------------------------------------------------------

    async def write(self, s: str) -> int:
        self.buffer._check()
        if self._encoder is None:
            raise io.UnsupportedOperation("not writable")
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        length = len(s)
        haslf = (self._writetranslate or self.line_buffering) and "\n" in s
        if haslf and self._writetranslate and self._writenl != "\n":
            s = s.replace("\n", self._writenl)
        await self._discard_read_ahead()
        await self.buffer.write(self._encoder.encode(s))
        if self.line_buffering and (haslf or "\r" in s):
            await self.buffer.flush()
        return length

    async def writelines(self, lines: Any) -> None:
        for line in lines:
            await self.write(line)

    async def _discard_read_ahead(self) -> None:
        """Before a write: move the binary position back to the next unread character."""
        if self._decoded[self._doff:] or self._snapshot is not None:
            if self.buffer._seekable:
                pos = self.tell()
                await self.buffer.seek(pos)
            self._reset_decoder()

    def _reset_decoder(self) -> None:
        self._decoded, self._doff, self._snapshot = "", 0, None
        if self._decoder is not None:
            self._decoder.reset()

    async def flush(self) -> None:
        await self.buffer.flush()

    async def fsync(self, datasync: bool = False) -> None:
        await self.buffer.fsync(datasync)

    async def truncate(self, size: int | None = None) -> int:
        await self.flush()
        if size is None:
            size = self.tell()
        return await self.buffer.truncate(size)

    # -- position ------------------------------------------------------------------------

    def tell(self) -> int:
        """Opaque position cookie (here the byte offset of the next character)."""
        binary = self.buffer
        binary._check_open()
        if not binary._seekable:
            raise io.UnsupportedOperation("underlying stream is not seekable")
        if self._snapshot is None:
            if self._decoded[self._doff:]:
                raise OSError("can't reconstruct the position after a merged read")
            return binary._tell()
        pos, state, raw = self._snapshot
        skip = self._doff
        decoder = self._decoder
        universal = isinstance(decoder, io.IncrementalNewlineDecoder)

        def at(after: int, st: Any) -> int:
            pending, flags = st
            cr = flags & 1 if universal else 0
            if (flags >> 1 if universal else flags) != 0:
                raise OSError("can't reconstruct the position of this text stream "
                              f"(decoder state {st!r})")
            return after - len(pending) - cr

        if skip == len(self._decoded) and decoder.getstate() == (b"", 0):
            return binary._tell()     # the whole chunk consumed, nothing pending
        if skip == 0 and state[0] == b"" and not (universal and state[1] & 1):
            return pos     # nothing of this chunk consumed, nothing pending
        if skip == 0:
            return at(pos, state)
        saved = decoder.getstate()
        try:
            decoder.setstate(state)
            chars = 0
            cr_end = None   # just after a \r the newline decoder still holds back
            for i in range(len(raw)):
                before = chars
                chars += len(decoder.decode(raw[i:i + 1]))
                if chars == skip:
                    return at(pos + i + 1, decoder.getstate())
                if chars > skip:
                    # A held-back \r came out together with the next character:
                    # the position right after that \r is the boundary.
                    if cr_end is not None and before + 1 == skip:
                        return cr_end
                    break
                st = decoder.getstate()
                if universal and st == (b"", 1):
                    cr_end = pos + i + 1
                elif not (universal and st[1] & 1):
                    cr_end = None
        finally:
            decoder.setstate(saved)
        raise OSError("can't reconstruct the position of the text stream here")

    async def seek(self, cookie: int, whence: int = os.SEEK_SET) -> int:
        binary = self.buffer
        binary._check()
        if not binary._seekable:
            raise io.UnsupportedOperation("underlying stream is not seekable")
        if whence == os.SEEK_CUR:
            if cookie != 0:
                raise io.UnsupportedOperation("can't do nonzero cur-relative seeks")
            cookie, whence = self.tell(), os.SEEK_SET
        elif whence == os.SEEK_END:
            if cookie != 0:
                raise io.UnsupportedOperation("can't do nonzero end-relative seeks")
            await self.flush()
            self._reset_decoder()
            pos = await binary.seek(0, os.SEEK_END)
            if self._encoder is not None:
                self._encoder.reset() if pos == 0 else self._encoder.setstate(0)
            return pos
        elif whence != os.SEEK_SET:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        if cookie < 0:
            raise ValueError(f"negative seek position {cookie!r}")
        await self.flush()
        self._reset_decoder()
        pos = await binary.seek(cookie)
        if pos and self._decoder is not None:
            self._decoder.setstate((b"", 0))     # mid-file: no BOM expected
        if self._encoder is not None:
            self._encoder.reset() if pos == 0 else self._encoder.setstate(0)
        return pos

    async def stat(self) -> os.stat_result:
        return await self.buffer.stat()

    async def close(self) -> None:
        await self.buffer.close()
