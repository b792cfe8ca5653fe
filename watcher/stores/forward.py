"""The stores' one forwarding mechanism: a store's method that is a method of one of its
parts, the objects it composes (a table, the write fence) in `StateStore` and `PgStore`; one
line each, no forwarding bodies written out.

`claim = Forward("outbox_table", OutboxTable.claim)` makes `store.claim(...)` the bound
`store.outbox_table.claim(...)`. mypy reads the parameters from the part's method, so
callers are checked as if it were written out; on the class, `Store.claim` is a function of
(store, ...) with that method's signature and docstring (what `stores.aio.Threaded` and
`inspect.signature` take).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, cast, overload

P = ParamSpec("P")
T = TypeVar("T")


class Forward(Generic[P, T]):
    """The method `method` of the store's part in attribute `part`."""

    def __init__(self, part: str, method: Callable[Concatenate[Any, P], T]) -> None:
        self._part = part
        self._name = method.__name__

        def unbound(store: object, /, *args: P.args, **kwargs: P.kwargs) -> T:
            return cast("Callable[P, T]", getattr(getattr(store, part), self._name))(
                *args, **kwargs
            )

        # Its name, docstring and (through `__wrapped__`) signature are the part's method's.
        self._unbound = functools.update_wrapper(unbound, method)
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, store: None, owner: type) -> Callable[Concatenate[Any, P], T]: ...
    @overload
    def __get__(self, store: object, owner: type) -> Callable[P, T]: ...
    def __get__(self, store: object, owner: type) -> Any:
        if store is None:
            return self._unbound
        # Looked up on each access: the part's own attribute (a test may replace it) wins.
        return getattr(getattr(store, self._part), self._name)


__all__ = ["Forward"]
