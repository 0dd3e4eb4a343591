"""Items a unit works on alone: a phase's units run side by side (defs/threaded_executor.py), and two
of them picking the same queued question or untitled conversation would each pay for it. A unit claims
what it picks (store/claims.py, owner: the unit in this process); another live unit skips it and takes
the next. When the handler ends, an item it finished stays claimed as done (a unit that read the queue
before it was finished will not take it), the others are given back for a later run. A crash leaves
them to a dead process, which the next claimant takes over.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from cass_pipelines.domain.states import ClaimState
from cass_pipelines.services.handlers.base import HandlerContext
from cass_pipelines.store import claims
from cass_pipelines.store.claims import Owner, never_over

T = TypeVar("T")


class Claimed(Generic[T]):
    """The items this unit holds, in their order; `finish` the ones it is done with."""

    def __init__(self, key_of: Callable[[T], str]):
        self.items: list[T] = []
        self.key = key_of   # an item's claim key
        self._finished: set[str] = set()

    def finish(self, item: T) -> None:
        self._finished.add(self.key(item))

    def end(self, ctx: HandlerContext) -> None:
        keys = [self.key(i) for i in self.items]
        claims.end_many(ctx.store, [k for k in keys if k in self._finished], ClaimState.DONE, ctx.now)
        claims.end_many(ctx.store, [k for k in keys if k not in self._finished], ClaimState.RELEASED, ctx.now)


@contextmanager
def claimed(ctx: HandlerContext, kind: str, candidates: list[T], count: int,
            id_of: Callable[[T], str]) -> Iterator[Claimed[T]]:
    """Up to `count` of `candidates`, in their order, that no other live unit holds or has finished,
    claimed for this unit until the block ends."""
    me = Owner.here(f"unit:{ctx.work_unit_id}")
    taken = Claimed[T](lambda item: f"{kind}:{id_of(item)}")
    rest = list(candidates)
    try:
        while rest and len(taken.items) < count:   # usually one round: a skipped item is replaced by the next
            asked, rest = rest[:count - len(taken.items)], rest[count - len(taken.items):]
            got = claims.claim_many(ctx.store, [taken.key(c) for c in asked], me, never_over, ctx.now)
            taken.items += [c for c in asked if taken.key(c) in got]
        yield taken
    finally:
        taken.end(ctx)
