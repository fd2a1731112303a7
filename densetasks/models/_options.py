"""Calling a registered factory with options from a config, with config-level errors."""

import inspect
from collections.abc import Callable
from typing import TypeVar

from densetasks.errors import ConfigError

T = TypeVar("T")


def call_with_options(factory: Callable[..., T], what: str, *args: object, **options: object) -> T:
    """``factory(*args, **options)``; an option it does not take raises :class:`ConfigError`.

    The message names ``what`` (e.g. ``"bottleneck 'aspp'"``), the bad keys and the options
    it does take, so that a typo in a config file fails at once with the key's name.
    """
    signature = inspect.signature(factory)
    try:
        signature.bind(*args, **options)
    except TypeError as error:
        taken = [
            name
            for name, parameter in list(signature.parameters.items())[len(args):]
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
        ]
        unknown = sorted(set(options) - set(taken))
        if not unknown:  # a missing required argument: the caller's bug, not the config's
            raise error
        raise ConfigError(
            f"{what} does not take option(s) {unknown}; it takes: {', '.join(taken) or 'none'}"
        ) from None
    return factory(*args, **options)
