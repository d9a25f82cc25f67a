"""The searcher registry: ``register_searcher``, ``list_searchers``, ``create_searcher``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from common.registry import Registry

if TYPE_CHECKING:
    from search.base import Searcher

SEARCHERS: Registry[Callable[..., Searcher]] = Registry("searcher")


def register_searcher(name: str, factory: Callable[..., Searcher] | None = None) -> Any:
    """Registers a searcher class (or factory) under ``name``; a decorator when ``factory`` is omitted.

    Raises:
        ValueError: ``name`` is already registered (the message lists the known names).
    """
    return SEARCHERS.register(name, factory)


def list_searchers() -> list[str]:
    """Registered searcher names, sorted."""
    return SEARCHERS.names()


def create_searcher(name: str, **settings: Any) -> Searcher:
    """Builds the searcher registered as ``name`` with its settings (``pop_size=..., seed=...``).

    Raises:
        ValueError: unknown name (listing the known ones) or an unknown setting.
    """
    return SEARCHERS.create(name, **settings)


def needs_additive(name: str) -> bool:
    """Whether searcher ``name`` needs objectives with per-slot tables (``Objective.additive``)."""
    if name not in SEARCHERS:  # not registered (yet): create_searcher names the known ones when it is asked for
        return False
    return bool(getattr(SEARCHERS.get(name), "needs_additive", False))
