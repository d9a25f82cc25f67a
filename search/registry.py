"""The searcher registry: ``register_searcher``, ``list_searchers``, ``create_searcher``, ``searcher_spec``.

Searchers of this package register on import of ``search``; searchers of other packages (the
gradient baselines, a user's plug-in) are declared as entry points of the group
``donna_nas.searchers`` (``name = "module:Class"`` in ``pyproject.toml``). Their names are listed at
once and their module is imported on first use, so the registry is complete whatever was imported
before, and ``search`` never imports the packages that build on it.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

from common.registry import Registry
from search.spec import SearcherSpec

if TYPE_CHECKING:
    from search.base import Searcher

ENTRY_POINT_GROUP = "donna_nas.searchers"
SEARCHERS: Registry[Callable[..., Searcher]] = Registry("searcher")
_PLUGINS: dict[str, EntryPoint] | None = None  # declared searchers not imported yet, read once


def register_searcher(name: str, factory: Callable[..., Searcher] | None = None) -> Any:
    """Registers a searcher class (or factory) under ``name``; a decorator when ``factory`` is omitted.

    Raises:
        ValueError: ``name`` is already registered (the message lists the known names).
    """
    return SEARCHERS.register(name, factory)


def _plugins() -> dict[str, EntryPoint]:
    global _PLUGINS
    if _PLUGINS is None:
        _PLUGINS = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return _PLUGINS


def list_searchers() -> list[str]:
    """Every searcher name, registered or declared as an entry point (imported or not), sorted."""
    return sorted(set(SEARCHERS.names()) | set(_plugins()))


def check_searcher(name: str) -> None:
    """Refuses an unknown searcher name without importing anything.

    Raises:
        ValueError: one line naming the known searchers.
    """
    if name not in SEARCHERS and name not in _plugins():
        raise ValueError(f"unknown searcher {name!r}; known searchers: {', '.join(list_searchers())}")


def searcher_factory(name: str) -> Callable[..., Searcher]:
    """The class (or factory) of searcher ``name``, importing its module on first use when it is a plug-in.

    Raises:
        ValueError: unknown name (listing the known ones), or a plug-in whose module does not register it.
    """
    check_searcher(name)
    if name not in SEARCHERS:
        entry = _plugins()[name]
        loaded = entry.load()  # importing the module registers the searcher (``@register_searcher``)
        if name not in SEARCHERS:  # a module that only defines the class: register what the entry names
            register_searcher(name, loaded)
    return SEARCHERS.get(name)


def searcher_spec(name: str) -> SearcherSpec:
    """What searcher ``name`` declares it needs and can do (``SearcherSpec()`` when it declares nothing)."""
    spec = getattr(searcher_factory(name), "spec", None)
    return spec if isinstance(spec, SearcherSpec) else SearcherSpec()


def create_searcher(name: str, **settings: Any) -> Searcher:
    """Builds the searcher registered as ``name`` with its settings (``pop_size=..., seed=...``) and, for
    searchers that declare them, its inputs (``data=...``, ``op_cost=...``).

    Raises:
        ValueError: unknown name (listing the known ones) or an unknown setting.
    """
    return searcher_factory(name)(**settings)


def needs_additive(name: str) -> bool:
    """Whether searcher ``name`` needs objectives with per-slot tables (``Objective.additive``)."""
    if name not in list_searchers():  # unknown: create_searcher names the known ones when it is asked for
        return False
    return searcher_spec(name).latency == "additive"
