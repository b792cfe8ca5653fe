"""Hostile API peers as ASGI apps: each answers some requests badly and hands every other
request to the simulator, so a healthy job can be watched beside an attacked one."""

from __future__ import annotations

from typing import Any

import anyio

from fireworks_sim import Simulator


class Drip:
    """Answers the requests whose path holds `path_part` with honest headers, then one byte
    every `pace` seconds (each read arrives well within any per-read timeout); hands every
    other request to the simulator."""

    def __init__(
        self, sim: Simulator, path_part: str = "supervisedFineTuningJobs", pace: float = 0.1
    ) -> None:
        self.sim = sim
        self.path_part = path_part
        self.pace = pace
        self.dripped = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.path_part not in scope["path"]:
            await self.sim(scope, receive, send)
            return
        body = b'{"supervisedFineTuningJobs": [], "totalSize": 0}' + b" " * 400
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for index in range(len(body)):
            self.dripped += 1
            await send(
                {"type": "http.response.body", "body": body[index : index + 1], "more_body": True}
            )
            await anyio.sleep(self.pace)
        await send({"type": "http.response.body", "body": b""})


class Hang:
    """Never answers the requests whose path holds `path_part` (the client's deadline ends
    each); hands every other request to the simulator."""

    def __init__(self, sim: Simulator, path_part: str) -> None:
        self.sim = sim
        self.path_part = path_part
        self.hung = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.path_part not in scope["path"]:
            await self.sim(scope, receive, send)
            return
        self.hung += 1
        await anyio.sleep_forever()
