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

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items))
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def create(self, name: str, *args, config_path: str, **options) -> T:
        """Build ``name`` with ``options``; options its factory does not take are a
        ConfigError naming ``config_path`` (the config section they came from)."""
        factory = self.get(name)
        try:
            inspect.signature(factory).bind(*args, **options)
        except TypeError as error:
            raise ConfigError(f"{config_path}: {error}") from None
        return factory(*args, **options)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
