"""``densetasks serve``: a web page over trained runs, to see every task and paint palettes.

Loads each run once, then serves the page and its JSON API (``docs/serve.md``) with
uvicorn. It listens on 127.0.0.1 by default; any other address exposes the runs (and the
machine's CPU) to the network, so binding one prints a warning. FastAPI and uvicorn come
with the optional extra ``pip install -e ".[serve]"``.
"""

import argparse
import sys
from pathlib import Path

from densetasks.errors import ConfigError

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from densetasks.serve import Limits, create_app, load_runs
    except ImportError as error:
        raise ConfigError(
            f"densetasks serve needs the 'serve' extra ({error.name} is missing): "
            'pip install -e ".[serve]"'
        ) from None
    if args.concurrency < 1 or args.queue < 0 or args.max_upload_mb <= 0 or args.max_pixels < 1:
        raise ConfigError(
            "--concurrency, --max-upload-mb and --max-pixels must be > 0, --queue >= 0"
        )
    if args.host not in LOCAL_HOSTS:
        print(
            f"densetasks serve: warning: listening on {args.host}, beyond this machine; anyone "
            "who reaches it can run the models (there is no authentication)",
            file=sys.stderr,
        )
    limits = Limits(round(args.max_upload_mb * 1024 * 1024), args.max_pixels)
    runs = load_runs(args.run_dirs, device=args.device, checkpoint=args.checkpoint)
    app = create_app(runs, limits, concurrency=args.concurrency, queue=args.queue)
    print(f"densetasks serve: {len(runs)} run(s) at http://{args.host}:{args.port}/")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
