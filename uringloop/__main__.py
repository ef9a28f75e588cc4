"""``python -m uringloop``: the doctor, and running unmodified asyncio scripts.

    python -m uringloop doctor [--json]
    python -m uringloop run [--fallback] script.py [args...]
    python -m uringloop run [--fallback] -m module [args...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import runpy
import sys
import warnings
from collections.abc import Callable, Sequence

from . import EventLoopPolicy, __version__, _doctor

RUN_USAGE = """\
usage: python -m uringloop run [--fallback] script.py [args ...]
       python -m uringloop run [--fallback] -m module [args ...]

Run an unmodified asyncio program with uringloop as its event loop: every
asyncio.run(), asyncio.Runner() and asyncio.new_event_loop() in it gets a
uringloop Loop.  The program sees sys.argv as if started with `python
script.py args...` (or `python -m module args...`).

options:
  --fallback   if io_uring is refused here, run on the stock asyncio loop
               (with a warning) instead of failing; same as URINGLOOP_FALLBACK=1
  -m module    run a module as __main__, as `python -m module` does
  -h, --help   show this help and exit
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m uringloop",
        description="uringloop: an asyncio event loop for Linux built on io_uring.")
    parser.add_argument("--version", action="version", version=f"uringloop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    doctor = sub.add_parser(
        "doctor", help="check whether io_uring works here and explain a refusal",
        description="Report the kernel, the io_uring sysctl, seccomp, memlock, the ring "
        "setup flags and supported operations, and the optional features in use. "
        "Exits 0 when uringloop can run here, 1 when it cannot.")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    # `run` takes its arguments by hand (see _run): everything after the script
    # belongs to the script, options included.  Listed here for --help only.
    sub.add_parser("run", help="run an unmodified asyncio script on uringloop "
                   "(run --help for details)", add_help=False)
    return parser


def _doctor_command(as_json: bool) -> int:
    report = _doctor.collect()
    if as_json:
        print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        sys.stdout.write(_doctor.format_text(report))
    return 0 if report.usable else 1


def install_policy() -> None:
    """Make uringloop the loop every asyncio entry point creates, quietly.

    Event loop policies are deprecated upstream (3.14) but remain the one hook
    that reaches an unmodified script's ``asyncio.run()``; the warning would
    only be noise aimed at a script that did nothing wrong.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(EventLoopPolicy())


def _usage_error(message: str) -> int:
    sys.stderr.write(RUN_USAGE.split("\n\n")[0] + f"\npython -m uringloop run: error: {message}\n")
    return 2


def _run(args: list[str]) -> int:
    module: str | None = None
    script: str | None = None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-h", "--help"):
            sys.stdout.write(RUN_USAGE)
            return 0
        if arg == "--fallback":
            os.environ["URINGLOOP_FALLBACK"] = "1"
        elif arg == "-m":
            if i + 1 >= len(args):
                return _usage_error("-m needs a module name")
            module = args[i + 1]
            i += 2
            break
        elif arg == "--":
            i += 1
            if i < len(args):
                script = args[i]
                i += 1
            break
        elif arg.startswith("-"):
            return _usage_error(f"unknown option {arg}")
        else:
            script = arg
            i += 1
            break
        i += 1
    rest = args[i:]
    if module is None and script is None:
        return _usage_error("a script or -m module is required")
    install_policy()
    if module is not None:
        # run_module(alter_sys=True) puts the module's file in sys.argv[0], as
        # `python -m module` does; sys.path[0] is already the working directory.
        sys.argv = [module, *rest]
        return _run_main(runpy.run_module, module, run_name="__main__", alter_sys=True)
    assert script is not None
    if not os.path.exists(script):
        # As `python missing.py`: a message, no traceback, exit status 2.
        sys.stderr.write(f"python -m uringloop run: can't open file "
                         f"{os.path.abspath(script)!r}: [Errno 2] No such file or directory\n")
        return 2
    # As `python script.py`: argv[0] is the script, sys.path[0] its directory.
    sys.argv = [script, *rest]
    script_dir = os.path.dirname(os.path.abspath(script))
    if sys.path:
        sys.path[0] = script_dir
    else:
        sys.path.insert(0, script_dir)
    # run_path puts its argument in sys.argv[0]: the script as given, as python does.
    return _run_main(runpy.run_path, script, run_name="__main__")


_OUR_FILES = {os.path.abspath(__file__), os.path.abspath(runpy.__file__ or "runpy")}


def _ours(filename: str) -> bool:
    return os.path.abspath(filename) in _OUR_FILES or filename.startswith("<frozen runpy")


def _run_main(runner: Callable[..., object], *args: object, **kwargs: object) -> int:
    """Run the program; an uncaught exception is reported as `python script.py`
    reports it -- through sys.excepthook, with the program's own frames only
    (not runpy's or ours) -- and gives exit status 1.  SystemExit and
    KeyboardInterrupt propagate, so that their exit statuses are Python's."""
    try:
        runner(*args, **kwargs)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        tb = exc.__traceback__
        while tb is not None and _ours(tb.tb_frame.f_code.co_filename):
            tb = tb.tb_next
        if tb is not None:
            exc.__traceback__ = tb     # the default hook prints the exception's own
        sys.excepthook(type(exc), exc, exc.__traceback__)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m uringloop``; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "run":
        return _run(args[1:])
    parser = _parser()
    ns = parser.parse_args(args)
    if ns.command == "doctor":
        return _doctor_command(ns.json)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
