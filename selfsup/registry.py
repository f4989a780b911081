"""One registry mechanism for methods, encoders, datasets, evaluation tasks and protocols.

``selfsup list`` and the parametrized tests are generated from these dicts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from selfsup.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        if name not in self._items:
            known = ", ".join(sorted(self._items)) or "none"
            raise UserError(f"unknown {self.kind} {name!r}; choose one of: {known}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())

    def __contains__(self, name: str) -> bool:
        return name in self._items


METHODS: Registry = Registry("method")
ENCODERS: Registry = Registry("encoder")
DATASETS: Registry = Registry("dataset")
TASKS: Registry = Registry("evaluation task")
PROTOCOLS: Registry = Registry("evaluation protocol")
