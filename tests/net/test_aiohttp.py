"""A real aiohttp server and client on the loop under test (loopback only).

The expected results are computed, not recorded, so the same assertions hold on
stock asyncio (the oracle) and on uringloop.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, AsyncIterator

import pytest
from netutil import pattern

aiohttp = pytest.importorskip("aiohttp", reason="aiohttp is not installed (test extra)")
web = pytest.importorskip("aiohttp.web")

pytestmark = pytest.mark.timeout(60)


def _app(peers: set[Any]) -> Any:
    routes = web.RouteTableDef()

    @routes.get("/hello")
    async def hello(request: Any) -> Any:
        peers.add(request.transport.get_extra_info("peername"))
        return web.Response(text="hello " + request.query.get("name", "world"))

    @routes.post("/echo")
    async def echo(request: Any) -> Any:
        peers.add(request.transport.get_extra_info("peername"))
        body = await request.read()
        return web.Response(body=body, headers={"X-Len": str(len(body)),
                                                "X-Chunked": str(request.headers.get(
                                                    "Transfer-Encoding") == "chunked")})

    @routes.post("/hash")
    async def hash_body(request: Any) -> Any:
        h = hashlib.sha256()
        n = 0
        async for chunk in request.content.iter_chunked(1 << 16):
            h.update(chunk)
            n += len(chunk)
        return web.json_response({"n": n, "sha256": h.hexdigest()})

    @routes.get("/chunked")
    async def chunked(request: Any) -> Any:
        count = int(request.query["count"])
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(count):
            await resp.write(b"chunk-%d;" % i)
        await resp.write_eof()
        return resp

    @routes.get("/big")
    async def big(request: Any) -> Any:
        return web.Response(body=pattern(int(request.query["n"]), seed=40))

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.add_routes(routes)
    return app


async def _serve(peers: set[Any]) -> tuple[Any, str]:
    runner = web.AppRunner(_app(peers))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


@pytest.mark.asyncio
async def test_aiohttp_requests() -> None:
    peers: set[Any] = set()
    runner, base = await _serve(peers)
    try:
        connector = aiohttp.TCPConnector(limit=8)
        async with aiohttp.ClientSession(connector=connector) as session:
            async def get_hello(i: int) -> str:
                async with session.get(f"{base}/hello", params={"name": str(i)}) as r:
                    assert r.status == 200
                    return str(await r.text())

            async def post_echo(i: int) -> tuple[bytes, str, str]:
                body = pattern(1000 + 997 * i, seed=i)
                async with session.post(f"{base}/echo", data=body) as r:
                    return await r.read(), r.headers["X-Len"], r.headers["X-Chunked"]

            # many small keep-alive requests, concurrently
            hellos = await asyncio.gather(*(get_hello(i) for i in range(300)))
            assert hellos == [f"hello {i}" for i in range(300)]
            # keep-alive: 300 requests over at most `limit` connections
            assert 1 <= len(peers) <= 8

            echoes = await asyncio.gather(*(post_echo(i) for i in range(60)))
            for i, (body, n, chunked) in enumerate(echoes):
                assert body == pattern(1000 + 997 * i, seed=i)
                assert (n, chunked) == (str(len(body)), "False")

            # chunked upload from an async generator
            async def gen() -> AsyncIterator[bytes]:
                data = pattern(5 * 1024 * 1024 + 3, seed=41)
                for k in range(0, len(data), 100_000):
                    yield data[k:k + 100_000]
                    await asyncio.sleep(0)

            async with session.post(f"{base}/hash", data=gen()) as r:
                assert await r.json() == {
                    "n": 5 * 1024 * 1024 + 3,
                    "sha256": hashlib.sha256(pattern(5 * 1024 * 1024 + 3, seed=41)).hexdigest()}

            async with session.post(f"{base}/echo", data=gen()) as r:
                assert r.headers["X-Chunked"] == "True"
                assert await r.read() == pattern(5 * 1024 * 1024 + 3, seed=41)

            # chunked download
            async with session.get(f"{base}/chunked", params={"count": "500"}) as r:
                assert r.headers["Transfer-Encoding"] == "chunked"
                got = await r.read()
            assert got == b"".join(b"chunk-%d;" % i for i in range(500))

            # a large body read in pieces
            async with session.get(f"{base}/big", params={"n": str(20 * 1024 * 1024)}) as r:
                h = hashlib.sha256()
                async for piece in r.content.iter_chunked(1 << 16):
                    h.update(piece)
            assert h.digest() == hashlib.sha256(pattern(20 * 1024 * 1024, seed=40)).digest()

            # a 404 and a 405 go through the same connections
            async with session.get(f"{base}/missing") as r:
                assert r.status == 404
            async with session.put(f"{base}/hello") as r:
                assert r.status == 405
    finally:
        await runner.cleanup()


@pytest.mark.asyncio
async def test_aiohttp_no_keepalive_and_early_close() -> None:
    peers: set[Any] = set()
    runner, base = await _serve(peers)
    try:
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            for i in range(30):
                async with session.get(f"{base}/hello", params={"name": str(i)}) as r:
                    assert await r.text() == f"hello {i}"
            assert len(peers) == 30              # one connection per request
            # the client walks away in the middle of a large response
            for _ in range(5):
                async with session.get(f"{base}/big", params={"n": str(16 * 1024 * 1024)}) as r:
                    first = await r.content.readexactly(1000)
                    assert first == pattern(1000, seed=40)
                    r.close()
            async with session.get(f"{base}/hello") as r:
                assert await r.text() == "hello world"
    finally:
        await runner.cleanup()
