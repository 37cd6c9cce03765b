"""Name registries of the engine's extension points (granularity policies, observers, algorithms).

Each extension point is a package whose modules register one entry each on import;
:func:`discover` imports every module of the package, so adding an entry means adding one file
(plus its ``conf/`` option), never editing a list.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from typing import Generic, TypeVar

from benchmark.quant.errors import QuantSpecError

__all__ = ["Registry", "discover"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries by name; lookups of unknown names raise a :class:`QuantSpecError` listing them.

    Args:
        what: the field that names an entry, used in messages (``QuantSpec.observer``).
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name``; a second entry of the same name is an error."""
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.what}={name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove ``name`` (entries registered for one experiment or test)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """The entry called ``name``."""
        try:
            return self._entries[name]
        except KeyError:
            raise QuantSpecError(
                f"{self.what}={name!r} is not one of {', '.join(self.names())}"
            ) from None

    def names(self) -> tuple[str, ...]:
        """Registered names, sorted."""
        return tuple(sorted(self._entries))

    def __contains__(self, name: object) -> bool:
        return name in self._entries


def discover(package: str, path: Iterable[str], skip: tuple[str, ...] = ("base",)) -> None:
    """Import every module of ``package`` (found on ``path``) except ``skip``."""
    for info in pkgutil.iter_modules(list(path)):
        if info.name not in skip and not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
