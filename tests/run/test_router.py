"""The round-robin router: requests alternate between replicas; streamed bodies pass through."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from revati.run.router import RoundRobin, make_app


def test_round_robin_order_and_counts():
    rr = RoundRobin(["http://a/", "http://b", "http://c"])
    assert [rr.next() for _ in range(7)] == ["http://a", "http://b", "http://c"] * 2 + ["http://a"]
    assert rr.counts == [3, 2, 2]


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


def _backend(name: str) -> web.Application:
    app = web.Application()

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(3):
            await resp.write(f"data: {name} {body['n']} {i}\n\n".encode())
            await asyncio.sleep(0.01)
        await resp.write_eof()
        return resp

    async def health(request):
        return web.Response(text="ok")

    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/health", health)
    return app


def test_requests_alternate_between_replicas_and_streams_pass_through():
    async def main():
        runners = []
        try:
            urls = []
            for name in ("r0", "r1"):
                r, u = await _serve(_backend(name))
                runners.append(r)
                urls.append(u)
            router_app = make_app(urls)
            r, router_url = await _serve(router_app)
            runners.append(r)
            async with aiohttp.ClientSession() as s:
                async with s.get(router_url + "/health") as h:
                    assert h.status == 200
                bodies = []
                for n in range(4):
                    async with s.post(router_url + "/v1/completions", json={"n": n}) as resp:
                        assert resp.status == 200
                        assert resp.headers["Content-Type"].startswith("text/event-stream")
                        chunks = [c async for c in resp.content.iter_any()]
                        bodies.append(b"".join(chunks).decode())
                async with s.get(router_url + "/revati/router") as st:
                    stats = await st.json()
            return bodies, stats
        finally:
            for r in runners:
                await r.cleanup()

    bodies, stats = asyncio.run(main())
    owners = [b.split()[1] for b in bodies]
    assert owners == ["r0", "r1", "r0", "r1"]
    assert all(b.count("data:") == 3 for b in bodies)
    assert stats["requests"] == [2, 2]
