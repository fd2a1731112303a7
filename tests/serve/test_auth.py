"""The token of ``densetasks serve`` beyond localhost: every route answers 401 without it, and
the header, the ``?token=`` link (which becomes an HttpOnly cookie) and the cookie open it."""

import argparse
import io

import numpy as np
import pytest
from PIL import Image

from densetasks.cli.main import main
from densetasks.cli.serve import access_token

from .conftest import SERVE_EXTRA

uvicorn = pytest.importorskip("uvicorn", reason=SERVE_EXTRA)
TestClient = pytest.importorskip("fastapi.testclient", reason=SERVE_EXTRA).TestClient
serve = pytest.importorskip("densetasks.serve", reason=SERVE_EXTRA)
auth = pytest.importorskip("densetasks.serve.auth", reason=SERVE_EXTRA)

TOKEN = "s3cret-token-for-the-tests"


def photo() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


ROUTES = [
    ("GET", "/", None),
    ("GET", "/static/app.js", None),
    ("GET", "/static/nope.js", None),
    ("GET", "/favicon.ico", None),
    ("GET", "/api/runs", None),
    ("GET", "/api/runs/hard/samples/0", None),
    ("GET", "/runs/hard/report.html", None),
    ("POST", "/api/predict", {"run": "hard"}),
    ("GET", "/no/such/route", None),
]
"""Every route of the app (and one that is none), as a request would call it."""


def call(client, method: str, path: str, fields: dict | None, **kwargs):
    if method == "POST":
        return client.post(path, data=fields, files={"image": ("i.png", photo())}, **kwargs)
    return client.get(path, **kwargs)


@pytest.fixture
def guarded(runs) -> TestClient:
    return TestClient(serve.create_app(runs, token=TOKEN), follow_redirects=False)


@pytest.mark.parametrize(("method", "path", "fields"), ROUTES)
def test_every_route_is_401_without_the_token(guarded, method, path, fields) -> None:
    for headers in ({}, {"Authorization": "token wrong-token"}, {"Authorization": TOKEN}):
        response = call(guarded, method, path, fields, headers=headers)
        assert response.status_code == 401, (path, headers)
        assert response.json() == {"error": response.json()["error"], "status": 401}
        assert "needs its token" in response.json()["error"]
        assert response.headers["www-authenticate"] == "Token"
    guarded.cookies.set(auth.COOKIE, "wrong")
    assert call(guarded, method, path, fields).status_code == 401
    assert call(guarded, method, f"{path}?token=wrong", fields).status_code == 401


@pytest.mark.parametrize(("method", "path", "fields"), ROUTES)
def test_the_header_opens_every_route(guarded, method, path, fields) -> None:
    for scheme in ("token", "Bearer"):
        response = call(
            guarded, method, path, fields, headers={"Authorization": f"{scheme} {TOKEN}"}
        )
        assert response.status_code != 401, (path, response.text)
    expected = {"/static/nope.js": 404, "/runs/hard/report.html": 404, "/no/such/route": 404}
    assert response.status_code == expected.get(path, 200), (path, response.text)


def test_the_link_sets_an_httponly_cookie_and_leaves_the_address_bar(guarded) -> None:
    response = guarded.get(f"/?token={TOKEN}")
    assert response.status_code == 303 and response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{auth.COOKIE}={TOKEN};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    page = guarded.get("/")  # the client keeps the cookie, as a browser does
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert guarded.get("/api/runs").json()["runs"][0]["id"] == "hard"
    assert call(guarded, *ROUTES[7]).status_code == 200


def test_a_token_in_an_api_url_answers_and_sets_the_cookie(guarded) -> None:
    response = guarded.get(f"/api/runs?token={TOKEN}")
    assert response.status_code == 200 and auth.COOKIE in response.headers["set-cookie"]


def test_without_a_token_every_route_is_open(runs) -> None:
    client = TestClient(serve.create_app(runs))
    for method, path, fields in ROUTES:
        assert call(client, method, path, fields).status_code != 401, path


def test_an_empty_token_is_refused() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        auth.TokenGuard(lambda *a: None, "")


def options(host: str, token: str | None = None, no_token: bool = False) -> argparse.Namespace:
    return argparse.Namespace(host=host, token=token, no_token=no_token)


def test_the_token_is_on_by_default_beyond_localhost(capsys) -> None:
    made = iter(["made-1", "made-2"])
    assert access_token(options("127.0.0.1"), lambda: next(made)) is None
    assert access_token(options("localhost"), lambda: next(made)) is None
    assert access_token(options("0.0.0.0"), lambda: next(made)) == "made-1"
    assert access_token(options("192.168.1.5"), lambda: next(made)) == "made-2"
    assert access_token(options("127.0.0.1", token=TOKEN), lambda: "x") == TOKEN
    assert capsys.readouterr().err == ""
    assert access_token(options("0.0.0.0", no_token=True), lambda: "x") is None
    assert "without a token (--no-token)" in capsys.readouterr().err
    assert len(auth.new_token()) == 32 and auth.new_token() != auth.new_token()


def test_the_command_prints_the_link_once_and_the_app_requires_it(run_dirs, monkeypatch, capsys):
    apps = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: apps.append(app))
    assert main(["serve", str(run_dirs["hard"]), "--host", "0.0.0.0", "--port", "8123"]) == 0
    out = capsys.readouterr().out
    assert out.count("?token=") == 1
    token = out.strip().rsplit("?token=", 1)[1]
    client = TestClient(apps[0])
    assert client.get("/api/runs").status_code == 401
    assert client.get("/api/runs", headers={"Authorization": f"token {token}"}).status_code == 200
    assert main(["serve", str(run_dirs["hard"]), "--host", "0.0.0.0", "--no-token"]) == 0
    assert "?token=" not in capsys.readouterr().out
    assert TestClient(apps[1]).get("/api/runs").status_code == 200
    assert main(["serve", str(run_dirs["hard"]), "--token", "short"]) == 2
    assert "--token: use 16 or more characters" in capsys.readouterr().err
    assert main(["serve", str(run_dirs["hard"]), "--token", TOKEN]) == 0
    assert TestClient(apps[2]).get("/api/runs").status_code == 401  # asked for on localhost too
