"""Restate side of the benchmark: the Python SDK service, served by hypercorn on 127.0.0.1.

Run by bench/run with the peers' Python (bench/.peers/venv): ``python restate_endpoint.py PORT``.
One process (``hypercorn.asyncio.serve``, no worker processes), HTTP/2 cleartext, which is what
restate-server speaks to a deployment. Restate's "workflow" here is a Service handler doing
``n`` sequential ``ctx.run`` steps, the same shape as bench/apps/tether_app. Stop it with SIGINT
(the SDK process ignores SIGTERM once it has served a request).
"""

from __future__ import annotations

import asyncio
import signal
import sys

import hypercorn.asyncio
import hypercorn.config
import restate

service = restate.Service("Bench")


async def work(i: int) -> int:
    return i + 1


@service.handler()
async def steps(ctx: restate.Context, n: int) -> int:
    total = 0
    for i in range(n):
        total += await ctx.run_typed("work", work, restate.RunOptions(), i)
    return total


app = restate.app(services=[service])


async def serve(port: int) -> None:
    config = hypercorn.config.Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = "-"
    config.loglevel = "WARNING"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await hypercorn.asyncio.serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
