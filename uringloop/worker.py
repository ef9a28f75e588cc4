"""A gunicorn worker class serving aiohttp applications on uringloop.

    gunicorn app:factory --worker-class uringloop.worker.GunicornWebWorker -w 4

:class:`GunicornWebWorker` is aiohttp's ``aiohttp.worker.GunicornWebWorker``
(the same one ``GunicornUVLoopWebWorker`` builds on) with one change: each
worker process, after gunicorn forks it, creates its own uringloop loop -- its
own io_uring ring -- with :func:`uringloop.new_event_loop`'s settings.  (The
listening socket gunicorn shares between the workers is passed in with
``sock=``, so the loop accepts on it single-shot: see uringloop/_network.py,
``_PASSED_IN``.)  Everything else
(the application or async factory gunicorn loads, graceful shutdown on SIGTERM,
``--max-requests``, access logs, TLS options) is aiohttp's.

Importing this module needs neither gunicorn nor aiohttp; the class is built
the first time it is looked up, and that lookup raises an ImportError naming
what to install if either is missing.

Where io_uring is refused, the worker fails to boot with
:class:`uringloop.UringUnavailableError` (gunicorn then stops), unless
``URINGLOOP_FALLBACK=1`` is set in gunicorn's environment or with ``--env``:
then it runs on the stock asyncio loop, with a warning.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

__all__ = ["GunicornWebWorker"]

_worker_class: type | None = None


def _build() -> type:
    try:
        import aiohttp.worker
        from gunicorn.workers import base  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ImportError(
            "uringloop.worker.GunicornWebWorker needs gunicorn and aiohttp "
            f"(pip install gunicorn aiohttp): {exc}") from exc

    from . import Loop, UringUnavailableError, new_event_loop

    class GunicornWebWorker(aiohttp.worker.GunicornWebWorker):
        """aiohttp's gunicorn worker, running each worker process on its own uringloop."""

        def init_process(self) -> None:
            # gunicorn's --env is normally applied by Worker.init_process, after
            # the loop exists; apply it first so that URINGLOOP_FALLBACK and
            # URINGLOOP_DISABLE given with --env reach new_event_loop().
            for key, value in (self.cfg.env or {}).items():
                os.environ[key] = value
            # aiohttp's init_process would close the current loop and make a
            # stock one; make ours instead (after the fork: one ring per worker)
            # and go straight to gunicorn's, which then calls run().
            try:
                self.loop = Loop()
            except UringUnavailableError:
                self.loop = new_event_loop()    # raises, or falls back if asked to
            asyncio.set_event_loop(self.loop)
            base.Worker.init_process(self)

    GunicornWebWorker.__module__ = __name__
    return GunicornWebWorker


def __getattr__(name: str) -> Any:
    global _worker_class
    if name == "GunicornWebWorker":
        if _worker_class is None:
            _worker_class = _build()
        return _worker_class
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
