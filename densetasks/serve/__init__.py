"""``densetasks serve``: a web page and a JSON API over trained runs (``docs/serve.md``).

:func:`load_runs` loads each run once through the :class:`~densetasks.engine.inference.Predictor`;
:func:`create_app` builds the FastAPI app that shows them. FastAPI and uvicorn come with
the optional extra ``pip install -e ".[serve]"``.
"""

from densetasks.serve.app import create_app
from densetasks.serve.registry import ServedRun, load_runs
from densetasks.serve.uploads import Limits

__all__ = ["Limits", "ServedRun", "create_app", "load_runs"]
