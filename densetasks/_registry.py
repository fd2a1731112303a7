"""A plain name -> factory registry, used for tasks, encoders, architectures and balancers.

It exists so that tests can parametrise over everything registered; there is no
import-time discovery: each noun's ``__init__`` lists its members explicitly.
"""

import inspect
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from densetasks.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories; ``get`` fails with the list of known names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}

    def register(self, name: str, factory: Callable[..., T]) -> Callable[..., T]:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = factory
        return factory

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a plug-in or a test that registered its own member cleans up)."""
        self.get(name)
        del self._items[name]

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items))
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def create(self, name: str, *args: object, config_path: str, **options: object) -> T:
        """``factory(*args, **options)`` for the registered ``name``, options checked first
        (:meth:`check_options`)."""
        self.check_options(name, *args, config_path=config_path, **options)
        return self.get(name)(*args, **options)

    def check_options(self, name: str, *args: object, config_path: str, **options: object) -> None:
        """Raise unless the factory of ``name`` takes ``(*args, **options)``.

        An option the factory does not take is a :class:`ConfigError` that names
        ``config_path`` (the config section the options came from), the bad keys and the
        options it does take, so a typo in a config file fails at once with the key's name.
        """
        factory = self.get(name)
        signature = option_signature(factory)
        try:
            signature.bind(*args, **options)
        except TypeError as error:
            taken = [
                key
                for key, parameter in list(signature.parameters.items())[len(args) :]
                if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
            ]
            unknown = sorted(set(options) - set(taken))
            problem = (
                f"{self.kind} {name!r} does not take option(s) {unknown}; "
                f"it takes: {', '.join(taken) or 'none'}"
                if unknown
                else f"{self.kind} {name!r}: {error}"
            )
            raise ConfigError(f"{config_path}: {problem}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def option_signature(factory: Callable[..., object]) -> inspect.Signature:
    """The signature a factory's options are checked against.

    A class whose ``__init__`` forwards ``**options`` to its parent's (a variant that adds a
    few options to a base architecture) takes the parent's named parameters too: they are
    listed after its own, so a misspelled option is still an error naming the key rather than
    a ``TypeError`` deep in the parent.
    """
    signature = inspect.signature(factory)
    parameters = list(signature.parameters.values())
    forwarded = [p for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD]
    if not (forwarded and isinstance(factory, type)):
        return signature
    parent = next((base for base in factory.__mro__[1:] if "__init__" in vars(base)), None)
    if parent is None or parent is object:
        return signature
    own = {p.name for p in parameters}
    inherited = [
        p
        for p in option_signature(parent).parameters.values()
        if p.name not in own
        and p.name != "self"
        and p.kind is not inspect.Parameter.VAR_KEYWORD
        and p.kind is not inspect.Parameter.VAR_POSITIONAL
    ]
    keyword_only = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in inherited]
    kept = [p for p in parameters if p.kind is not inspect.Parameter.VAR_KEYWORD]
    return signature.replace(parameters=[*kept, *keyword_only])
