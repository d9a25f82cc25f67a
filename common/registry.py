"""A small named registry: register, list, create, with errors that list the known names."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories (classes or functions) of one kind of thing.

    Args:
        kind: what the registry holds, used in error messages ("searcher", "backend", ...).
        error: the ``ValueError`` subclass raised for an unknown or duplicate name (a package's own error type).
    """

    def __init__(self, kind: str, error: type[ValueError] = ValueError) -> None:
        self.kind = kind
        self.error = error
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T | None = None) -> T | Callable[[T], T]:
        """Registers ``item`` under ``name``; usable as a decorator when ``item`` is omitted."""
        if item is None:
            return lambda obj: self.register(name, obj)  # type: ignore[return-value]
        if name in self._items:
            raise self.error(f"{self.kind} {name!r} is already registered; known: {self.names()}")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        """Returns the item registered as ``name`` or raises ``self.error`` listing known names."""
        if name not in self._items:
            raise self.error(f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(self.names())}")
        return self._items[name]

    def create(self, name: str, *args, **kwargs):
        """Calls the factory registered as ``name`` with the given arguments."""
        return self.get(name)(*args, **kwargs)  # type: ignore[operator]

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
