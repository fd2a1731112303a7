"""One log line per request: client, method, path, status, bytes sent and time taken.

``127.0.0.1 "POST /api/predict" 200 48211 B 63.1 ms`` on the ``densetasks.serve.access``
logger (``densetasks serve`` prints it on stderr). The path is logged as the client sent it
(percent-encoded, so a ``%0A`` cannot start a fake log line) and the query string is left
out, so a token given as ``?token=`` never reaches the log; a request whose client went
away before an answer is logged with status 0.
"""

import logging
import time

from densetasks.serve._asgi import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("densetasks.serve.access")


class AccessLog:
    """ASGI middleware writing :data:`logger` lines for the HTTP requests of ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status, sent = 0, 0

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            client = (scope.get("client") or ("-", 0))[0]
            path = scope.get("raw_path") or scope["path"].encode()
            elapsed_ms = (time.perf_counter() - started) * 1000
            logger.info(
                '%s "%s %s" %d %d B %.1f ms',
                client,
                scope["method"],
                path.split(b"?", 1)[0].decode("ascii", "backslashreplace"),
                status,
                sent,
                elapsed_ms,
            )
