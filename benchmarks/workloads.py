"""What the suite measures: the network cells and the loop-heart micro-benchmarks."""

from __future__ import annotations

import dataclasses

KIB = 1024


@dataclasses.dataclass(frozen=True)
class NetCell:
    """One network workload: a server kind driven by the C client."""

    kind: str          # benchmarks.servers kind
    mode: str          # "echo" or "http" (what the client checks, how the C server answers)
    size: int = KIB    # echo message size
    conns: int = 10
    depth: int = 1     # requests in flight per connection
    group: str = "echo"

    @property
    def name(self) -> str:
        if self.mode == "http":
            what = f"http {self.kind}"
        else:
            what = f"echo {self.kind} {self.size // KIB}KiB"
        extra = f" x{self.depth} pipelined" if self.depth > 1 else ""
        return f"{what} c{self.conns}{extra}"


ECHO_KINDS = ("protocol", "buffered", "streams", "sockets")

NET_CELLS: tuple[NetCell, ...] = (
    *(NetCell(kind, "echo", size)
      for kind in ECHO_KINDS for size in (1 * KIB, 10 * KIB, 100 * KIB)),
    NetCell("protocol", "echo", KIB, depth=32, group="pipelined"),
    *(NetCell("protocol", "echo", KIB, conns=n, group="connections") for n in (1, 100, 1000)),
    NetCell("aiohttp", "http", group="http"),
    NetCell("httptools", "http", group="http"),
)

QUICK_NET_CELLS: tuple[NetCell, ...] = (
    NetCell("protocol", "echo", KIB),
    NetCell("protocol", "echo", 100 * KIB),
    NetCell("buffered", "echo", KIB),
    NetCell("streams", "echo", KIB),
    NetCell("sockets", "echo", KIB),
    NetCell("protocol", "echo", KIB, depth=32, group="pipelined"),
    NetCell("protocol", "echo", KIB, conns=100, group="connections"),
    NetCell("aiohttp", "http", group="http"),
    NetCell("httptools", "http", group="http"),
)

MICRO_BENCHES = ("call_soon", "call_later", "threadsafe_pingpong", "executor_pingpong",
                 "future_churn", "task_churn")
