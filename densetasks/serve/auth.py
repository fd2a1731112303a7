"""A token in front of every route, Jupyter's way: for a server others can reach.

``densetasks serve`` beyond this machine makes a random token and prints the page's URL with
it once (``/?token=...``). Every request must then carry the token, in one of three ways:

* ``Authorization: token <t>`` (or ``Bearer <t>``): scripts and ``curl``;
* ``?token=<t>`` in the URL: the printed link. A request that brings a valid token this way
  gets it back as an ``HttpOnly``, ``SameSite=Strict`` cookie, and ``GET /?token=`` is
  redirected to ``/`` so the token leaves the address bar and the history;
* that cookie: the page's own requests (its script never sees the token).

Anything else is 401 with a JSON error, on every route: the page, its static files, the API,
the reports. Tokens are compared in constant time (``secrets.compare_digest``). The access
log never records the query string, so the token does not end up in it either.
"""

import json
import secrets

from starlette.requests import HTTPConnection

from densetasks.serve._asgi import ASGIApp, Message, Receive, Scope, Send

COOKIE = "densetasks_token"
SCHEMES = ("token", "bearer")
TOKEN_BYTES = 24
"""Random bytes of a generated token (32 URL-safe characters)."""


def new_token() -> str:
    """A fresh random token (URL-safe)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


class TokenGuard:
    """ASGI middleware: requests without ``token`` (header, cookie or query) get 401."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        if not token:
            raise ValueError("the token must not be empty")
        self.app = app
        self._token = token.encode()

    def _valid(self, candidate: str | None) -> bool:
        return candidate is not None and secrets.compare_digest(candidate.encode(), self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        if self._valid(_header_token(connection)) or self._valid(connection.cookies.get(COOKIE)):
            await self.app(scope, receive, send)
            return
        if not self._valid(connection.query_params.get("token")):
            await _unauthorised(send)
            return
        cookie = f"{COOKIE}={self._token.decode()}; Path=/; HttpOnly; SameSite=Strict".encode()
        if scope["method"] == "GET" and scope["path"] == "/":
            await _redirect_home(send, cookie)
            return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie)]
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _header_token(connection: HTTPConnection) -> str | None:
    scheme, _, value = connection.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() in SCHEMES and value.strip() else None


async def _unauthorised(send: Send) -> None:
    message = (
        "this server needs its token: open the URL it printed (.../?token=...) or send the "
        "header 'Authorization: token <token>'"
    )
    body = json.dumps({"error": message, "status": 401}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", b"Token"),
    ]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _redirect_home(send: Send, cookie: bytes) -> None:
    headers = [(b"location", b"/"), (b"set-cookie", cookie), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
