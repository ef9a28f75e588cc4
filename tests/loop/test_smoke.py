import asyncio

import pytest


@pytest.mark.asyncio
async def test_sleep_and_call_soon():
    loop = asyncio.get_running_loop()
    order = []
    loop.call_soon(order.append, 1)
    loop.call_later(0.01, order.append, 3)
    loop.call_soon(order.append, 2)
    await asyncio.sleep(0.02)
    assert order == [1, 2, 3]


def test_run_fixture(run):
    async def main():
        return await asyncio.sleep(0, result=7)
    assert run(main()) == 7
