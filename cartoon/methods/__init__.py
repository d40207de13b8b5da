"""Method registry: each module in this package defines one method and registers it by name.

Adding a method means adding a module here (networks, losses, training steps) and a params
section; stages, the CLI and tracking look methods up by name and never branch on it.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

from cartoon.errors import UsageError
from cartoon.methods.base import Method, MethodParams
from cartoon.params import Params, flatten, load_params, validate

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


def method_params(params: Params, name: str | None = None) -> MethodParams:
    """The validated section of a method (the selected one by default)."""
    name = name or params.model.name
    raw = (params.model_extra or {}).get(name) or {}
    return validate(get_method(name).Params, raw, prefix=f"{name}.")


def flat_params(params: Params) -> dict[str, Any]:
    """Dotted key -> value for MLflow: the shared sections plus the selected method's."""
    data = {key: getattr(params, key).model_dump() for key in type(params).model_fields}
    data[params.model.name] = method_params(params).model_dump()
    return dict(flatten(data))


def load_run_params(path: Path | str = "params.yaml") -> Params:
    """``load_params`` plus the method sections: every extra top-level section must name a
    registered method and validate against its schema, and ``model.name`` must be one."""
    params = load_params(path)
    known = available_methods()
    for key in params.model_extra or {}:
        if key not in known:
            raise UsageError(
                f"invalid params: {key}: unknown section (sections: {', '.join(sorted(Params.model_fields))}; "
                f"method sections: {', '.join(known)})"
            )
    if params.model.name not in known:
        raise UsageError(f"invalid params: model.name: unknown method {params.model.name!r} (known: {', '.join(known)})")
    for key in params.model_extra or {}:
        method_params(params, key)
    return params
