"""``densetasks serve``: a web page over trained runs, to see every task and paint palettes.

Loads each run once, then serves the page and its JSON API (``docs/serve.md``) with
uvicorn, one access-log line per request on stderr. It listens on 127.0.0.1 by default.
Any other address exposes the runs (and the machine's CPU) to the network, so there every
request must carry a token (Jupyter's model): a random one is made and printed once in the
page's URL, ``--token`` sets one, ``--no-token`` opts out explicitly. SIGTERM or Ctrl-C
stops taking connections, lets the requests in flight finish (``--drain-s`` at most), then
exits. FastAPI and uvicorn come with the optional extra ``pip install -e ".[serve]"``.
"""

import argparse
import logging
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from densetasks.errors import ConfigError

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9._~-]{16,}")
"""A token given with ``--token``: 16 or more URL- and cookie-safe characters."""
DRAIN_S = 30.0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="a web page over trained runs: every task's prediction, Task Palettes, compare",
        description="Serve a page (and a JSON API) where an image is predicted by each run, "
        "palettes are painted for CompositeTasking runs and two runs are compared.",
    )
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="trained runs")
    parser.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    access = parser.add_mutually_exclusive_group()
    access.add_argument(
        "--token",
        help="require this token (16+ characters of A-Z a-z 0-9 . _ ~ -) on every request; "
        "default: a random one beyond localhost, none on localhost",
    )
    access.add_argument(
        "--no-token",
        action="store_true",
        help="serve beyond localhost without a token: anyone who reaches the port can use it",
    )
    parser.add_argument(
        "--checkpoint", default="best", choices=["best", "last"], help="default best"
    )
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--max-upload-mb", type=float, default=10.0, help="largest upload (default 10 MB)"
    )
    parser.add_argument(
        "--max-pixels", type=int, default=4_000_000, help="largest image (default 4,000,000)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=1, help="predictions at once (default 1)"
    )
    parser.add_argument(
        "--queue", type=int, default=8, help="requests waiting beyond those; more get 503"
    )
    parser.add_argument(
        "--drain-s",
        type=float,
        default=DRAIN_S,
        help=f"on SIGTERM, how long requests in flight may still run (default {DRAIN_S:g} s)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn
        from PIL import Image

        from densetasks.serve import Limits, create_app, load_runs
        from densetasks.serve.auth import new_token
    except ImportError as error:
        raise ConfigError(
            f"densetasks serve needs the 'serve' extra ({error.name} is missing): "
            'pip install -e ".[serve]"'
        ) from None
    if args.concurrency < 1 or args.queue < 0 or args.max_upload_mb <= 0 or args.max_pixels < 1:
        raise ConfigError(
            "--concurrency, --max-upload-mb and --max-pixels must be > 0, --queue >= 0"
        )
    pillow_limit = 2 * Image.MAX_IMAGE_PIXELS  # Pillow refuses to open anything larger
    if args.max_pixels > pillow_limit:
        raise ConfigError(f"--max-pixels: at most {pillow_limit:,} (Pillow's own limit)")
    if args.drain_s < 0:
        raise ConfigError("--drain-s must be >= 0")
    token = access_token(args, new_token)
    # Every image is checked against --max-pixels from its header first; Pillow's warning
    # for images above its own threshold would only repeat a size the user allowed.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("densetasks.serve").setLevel(logging.INFO)
    limits = Limits(round(args.max_upload_mb * 1024 * 1024), args.max_pixels)
    runs = load_runs(args.run_dirs, device=args.device, checkpoint=args.checkpoint)
    app = create_app(runs, limits, concurrency=args.concurrency, queue=args.queue, token=token)
    url = f"http://{_url_host(args.host)}:{args.port}/"
    print(f"densetasks serve: {len(runs)} run(s) at {url}" + (f"?token={token}" if token else ""))
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,  # ours: densetasks.serve.access, without query strings (tokens)
        timeout_graceful_shutdown=args.drain_s,
    )
    return 0


def access_token(args: argparse.Namespace, make_token: Callable[[], str]) -> str | None:
    """The token every request must carry, or ``None``: ``--token``; else a new one from
    ``make_token()`` beyond localhost unless ``--no-token`` (which warns there)."""
    if args.token is not None:
        if not TOKEN_PATTERN.fullmatch(args.token):
            raise ConfigError(
                "--token: use 16 or more characters of A-Z a-z 0-9 . _ ~ - "
                "(python -c 'import secrets; print(secrets.token_urlsafe(24))')"
            )
        return args.token
    if args.host in LOCAL_HOSTS:
        return None
    if args.no_token:
        print(
            f"densetasks serve: warning: listening on {args.host} without a token (--no-token); "
            "anyone who reaches it can run the models and read the runs' reports",
            file=sys.stderr,
        )
        return None
    return make_token()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
