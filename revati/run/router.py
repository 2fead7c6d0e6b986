"""A round-robin HTTP reverse proxy in front of the replicas of `revati run`.

Each request goes to the next backend in turn (streamed responses are relayed chunk by
chunk, so TTFT and ITL pass through). It is deliberately simple: no health checks, no
least-loaded choice; the report says a router was used. It runs as its own process under the
emulator (`python -m revati.run.router`), so with the time warp on it waits on the same
virtual clock as the servers and the load generator.
"""

from __future__ import annotations

import argparse
import itertools
import sys

import aiohttp
from aiohttp import web

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "host", "content-length"}


class RoundRobin:
    """Backends in turn; `counts` says how many requests each got."""

    def __init__(self, backends: list[str]):
        if not backends:
            raise ValueError("the router needs at least one backend")
        self.backends = [b.rstrip("/") for b in backends]
        self._cycle = itertools.cycle(range(len(self.backends)))
        self.counts = [0] * len(self.backends)

    def next(self) -> str:
        i = next(self._cycle)
        self.counts[i] += 1
        return self.backends[i]


RR_KEY = web.AppKey("rr", RoundRobin)
SESSION_KEY = web.AppKey("session", aiohttp.ClientSession)


def make_app(backends: list[str]) -> web.Application:
    rr = RoundRobin(backends)
    app = web.Application(client_max_size=1 << 30)
    app[RR_KEY] = rr

    async def on_startup(app: web.Application) -> None:
        app[SESSION_KEY] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None),
                                               connector=aiohttp.TCPConnector(limit=0))

    async def on_cleanup(app: web.Application) -> None:
        await app[SESSION_KEY].close()

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"backends": rr.backends, "requests": rr.counts})

    async def health(request: web.Request) -> web.Response:
        # healthy when every backend is
        for b in rr.backends:
            try:
                async with app[SESSION_KEY].get(b + "/health") as r:
                    if r.status != 200:
                        return web.Response(status=503, text=f"{b} answers {r.status}")
            except aiohttp.ClientError as e:
                return web.Response(status=503, text=f"{b}: {e}")
        return web.Response(text="ok")

    async def proxy(request: web.Request) -> web.StreamResponse:
        # GETs of metadata (models list) go to the first backend, so they do not shift the turn.
        backend = rr.backends[0] if request.method == "GET" else rr.next()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        async with app[SESSION_KEY].request(request.method, backend + request.rel_url.path_qs,
                                          headers=headers, data=body) as upstream:
            resp = web.StreamResponse(status=upstream.status, headers={
                k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP})
            await resp.prepare(request)
            async for chunk in upstream.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_get("/revati/router", stats)
    app.router.add_get("/health", health)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m revati.run.router")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("backends", nargs="+", help="base URLs of the replicas")
    a = p.parse_args(argv)
    print(f"revati router: round robin over {a.backends} on {a.host}:{a.port}", flush=True)
    web.run_app(make_app(a.backends), host=a.host, port=a.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
