"""Options of the model tests."""

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-frozen",
        action="store_true",
        help="rewrite tests/models/frozen/ from the architectures as they are now",
    )
