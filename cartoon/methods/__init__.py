"""Method registry: each module in this package defines one method and registers it by name.

Adding a method means adding a module here (networks, losses, training steps) and a params
section; stages, the CLI and tracking look methods up by name and never branch on it.
"""

from __future__ import annotations

import importlib
import pkgutil

from cartoon.errors import UsageError
from cartoon.methods.base import Method

_REGISTRY: dict[str, type[Method]] = {}
_LOADED = False


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available under ``cls.name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise RuntimeError(f"method name {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _load_all() -> None:
    global _LOADED
    if not _LOADED:
        for info in pkgutil.iter_modules(__path__):
            if info.name != "base":
                importlib.import_module(f"{__name__}.{info.name}")
        _LOADED = True


def available_methods() -> dict[str, type[Method]]:
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def get_method(name: str) -> type[Method]:
    methods = available_methods()
    if name not in methods:
        raise UsageError(f"unknown method {name!r} (known: {', '.join(methods)})")
    return methods[name]
