"""One way to name the implementations of a seam (family, engine, benchmark, reward, loss, advantage).

A built-in registers under a short name with a decorator (``@LOSSES.register("dapo", aggregation="dapo")``:
the name stands for the class built with those arguments); a configuration names it (``loss: dapo``) or
gives any subclass of the seam's base class by ``class_path`` with its ``init_args`` — a user's own class in
the user's own module, the package untouched. :meth:`Registry.build` turns any of these into the object.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Generic, Literal, TypeVar

T = TypeVar("T")


def import_object(path: str) -> Any:
    """The object a dotted path names: ``"package.module.Name"`` or ``"package.module:Name"``."""
    module, _, name = path.replace(":", ".").rpartition(".")
    if not module:
        raise ImportError(f"{path!r} is not a dotted path (package.module.Name)")
    return getattr(importlib.import_module(module), name)


class Registry(Generic[T]):
    """The built-in implementations of one seam, by name; anything else is given by class path."""

    def __init__(self, seam: str, base: type[T], shared: bool = False):
        """``shared``: a name builds one instance, returned every time (stateless adapters: families, benchmarks)."""
        self.seam, self.base, self.shared = seam, base, shared
        self._entries: dict[str, tuple[type[T], dict[str, Any]]] = {}
        self._instances: dict[str, T] = {}

    def register(self, name: str, **init_args):
        """Class decorator: ``name`` builds the class with ``init_args`` (stack several for several names)."""
        def add(cls: type[T]) -> type[T]:
            if name in self._entries:
                raise ValueError(f"{self.seam} {name!r} is registered twice ({self._entries[name][0].__name__}, "
                                 f"{cls.__name__})")
            self._entries[name] = (cls, init_args)
            cls.registered_as = cls.__dict__.get("registered_as") or name  # its first name: the one logs use
            return cls
        return add

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def literal(self):
        """The registered names as a ``Literal`` type: a configuration naming another fails at parse, listing these."""
        return Literal[self.names()]  # type: ignore[valid-type]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str, default: T | None = None) -> T | None:
        return self.build(name) if name in self._entries else default

    def classes(self) -> dict[str, type[T]]:
        """name -> class of every registered entry."""
        return {name: cls for name, (cls, _) in self._entries.items()}

    def __getitem__(self, name: str) -> T:
        return self.build(name)

    def build(self, spec: str | dict | T | None) -> T:
        """An instance from a registered name, a dotted class path, ``{"class_path": ..., "init_args": {...}}``
        (the configuration's and the hyper-parameters' form) or an instance, returned as it is."""
        if isinstance(spec, self.base):
            return spec
        if isinstance(spec, str) and spec in self._entries:
            if spec in self._instances:
                return self._instances[spec]
            cls, init_args = self._entries[spec]
            obj = cls(**init_args)
            if self.shared:
                self._instances[spec] = obj
            return obj
        if isinstance(spec, dict) and "class_path" in spec and spec["class_path"] in self._entries:
            cls, defaults = self._entries[spec["class_path"]]  # a name with init_args: they override its defaults
            return cls(**{**defaults, **(spec.get("init_args") or {})})
        if isinstance(spec, dict) and "class_path" in spec:
            cls, init_args = self._class(spec["class_path"]), dict(spec.get("init_args") or {})
        elif isinstance(spec, str) and "." in spec:
            cls, init_args = self._class(spec), {}
        else:
            raise ValueError(f"unknown {self.seam} {spec!r}; known: {', '.join(self._entries)}, or the class_path "
                             f"of a {self.base.__module__}.{self.base.__name__} subclass")
        return cls(**init_args)

    def _class(self, path: str) -> type[T]:
        try:
            cls = import_object(path)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"{self.seam} class_path {path!r}: cannot import it ({e})") from None
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise ValueError(f"{self.seam} class_path {path!r} is not a subclass of "
                             f"{self.base.__module__}.{self.base.__name__}")
        return cls


def spec(obj: Any) -> dict[str, Any]:
    """``{"class_path", "init_args"}`` of an object whose constructor arguments are same-named attributes
    (every built-in's convention): what hyper-parameters record, and :meth:`Registry.build` rebuilds."""
    cls = type(obj)
    params = [p for p in inspect.signature(cls.__init__).parameters.values()
              if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}",
            "init_args": {p.name: getattr(obj, p.name) for p in params if hasattr(obj, p.name)}}
