"""Fork safety: after ``fork()`` every Producer in the child gets fresh per-process state.

Neither librdkafka nor grpcio survives a fork (their threads stay in the parent). The parent's
objects are kept referenced in the child, never closed or collected there: their destructors
would wait on threads that do not exist.
"""

from __future__ import annotations

import os
import weakref
from typing import Any, Protocol


class ForkAware(Protocol):
    def before_fork(self) -> None: ...

    def after_fork_in_parent(self) -> None: ...

    def after_fork_in_child(self) -> None: ...


_PRODUCERS: weakref.WeakSet[Any] = weakref.WeakSet()
_ABANDONED: list[object] = []


def track(producer: ForkAware) -> None:
    _PRODUCERS.add(producer)


def abandon(thing: object) -> None:
    _ABANDONED.append(thing)


def _before_fork() -> None:
    for producer in list(_PRODUCERS):
        producer.before_fork()


def _after_fork_in_parent() -> None:
    for producer in list(_PRODUCERS):
        producer.after_fork_in_parent()


def _after_fork_in_child() -> None:
    for producer in list(_PRODUCERS):
        producer.after_fork_in_child()


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)
