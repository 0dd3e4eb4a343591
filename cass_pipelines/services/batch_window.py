"""Batched calls made together go out together. The calls an action's threads send as Message Batches at
about the same time (the memory catch-up's conversations) are gathered into one batch, and one poll of
a batch serves every call waiting on it: looked at at once, then after FIRST_POLL_S, each later look
waiting half as long again, up to `batch_poll_s` (a gentle backoff: a batch is seen within about a
third of its age after it ended, and a long one is looked at every `batch_poll_s`).

One batch per call meant one create and one polling loop per conversation (56 batches for the sample's
catch-up, each looked at every `batch_poll_s`), so the catch-up took as many poll intervals as it had
waves of calls. Holds and stored requests stay per call (services/metering.py); the sending, the
looking and the bookkeeping after each are shared: `on_sent` stores a new batch's id for all its
requests, `on_answers` settles every answer a look brought in (one ledger transaction, not one per call). A look the
API fails retryably counts as a look at a running batch (`trouble` keeps why), and a waiter past its deadline
gives up once any look begun after it came to wait has been made (not one more look each), unless a look
saw the batch ended and its settlement failed: then each looks again (and fails alone, or takes its answer).
"""
from __future__ import annotations

import copy
import threading
import time
from typing import Callable, NamedTuple

from cass_pipelines.llm.base import BatchAnswer, BatchClient, BatchItem, LLMError
from cass_pipelines.services import stopping

GATHER_S = 1.0       # the longest a gathering batch waits for the next announced call (counting) to arrive
GATHER_MAX_S = 30.0  # the longest a gathering batch waits in all, however steadily calls still arrive
FIRST_POLL_S = 0.25  # the pause before the second look at a batch
POLL_GROWTH = 1.5    # each later pause is this much longer, up to batch_poll_s


class Sent(NamedTuple):
    batch_id: str
    id_stored: bool   # `on_sent` stored the batch id for the item's request (else its caller stores it)
    item: BatchItem   # the item as it was sent (`on_hold` may have lowered its output bound)


class BatchWindow:
    """Shared by the threads of one MeteredClient. A call announces itself (`expect`) before it counts its
    prompt, then `send`s its item; a caller about to start several calls at once may `promise` them first
    (a call whose thread has not started yet holds the batch back too). The window is sent once no
    announced call is still on its way, or when none arrived for GATHER_S (on a loaded machine 56 token
    counts may take more than a second, and arrive steadily), or GATHER_MAX_S after it opened; its items
    are held together just before (`on_hold`: one transaction for a batch's holds, not one each).
    `answer` waits for a request's answer; one waiter at a time looks at a batch."""

    def __init__(self, client: BatchClient, poll_s: float, gather_s: float = GATHER_S,
                 on_hold: Callable[[list[BatchItem]], list[BatchItem | BaseException]] | None = None,
                 on_sent: Callable[[str, list[str]], None] | None = None,
                 on_answers: Callable[[str, dict[str, BatchAnswer]], None] | None = None):
        self._client, self._poll_s, self._gather_s = client, poll_s, gather_s
        self._on_hold, self._on_sent, self._on_answers = on_hold, on_sent, on_answers
        self._cond = threading.Condition()
        self._coming = 0                                        # announced calls not yet in the window
        self._promised = 0                                      # of those, promised ones not yet announced
        self._open: list[BatchItem] = []                        # items gathered, not yet sent
        self._opened_at = self._arrived_at = 0.0
        self._sending = False
        self._sent: dict[str, Sent | BaseException] = {}        # custom id -> its batch, or why not sent
        self._waiting: dict[str, dict[str, BatchItem]] = {}     # batch id -> its items not yet answered
        self._answers: dict[str, BatchAnswer] = {}              # custom id -> answer, until its waiter takes it
        self._looks: dict[str, int] = {}                        # batch id -> looks so far (the backoff's)
        self._begun: dict[str, int] = {}                        # batch id -> looks begun while it has waiters
        self._ended: set[str] = set()                           # batches seen ended whose settlement failed
        self._looking: set[str] = set()                         # batch ids a waiter is looking at now
        self.trouble: dict[str, str] = {}                       # batch id -> why its last look failed

    def expect(self) -> None:
        """A call is on its way to `send` (or will `withdraw`): a window being gathered waits for it."""
        with self._cond:
            if self._promised > 0:
                self._promised -= 1
            else:
                self._coming += 1

    def promise(self, calls: int) -> None:
        """`calls` calls are about to start (each will `expect`): the window waits for them from now."""
        with self._cond:
            self._coming += calls
            self._promised += calls

    def unpromise(self) -> None:
        """The promised calls not started will not be: the window being gathered may go without them."""
        with self._cond:
            self._coming -= self._promised
            self._promised = 0
            self._cond.notify_all()

    def withdraw(self) -> None:
        """An announced call will not send after all (its hold was refused)."""
        with self._cond:
            self._coming -= 1
            if self._coming <= 0:   # the window being gathered may go now
                self._cond.notify_all()

    def send(self, item: BatchItem) -> Sent:
        """Send `item` with the calls gathered around it; returns the batch it went out in."""
        with self._cond:
            self._coming -= 1
            self._arrived_at = time.monotonic()
            if not self._open:
                self._opened_at = self._arrived_at
            self._open.append(item)
            while item.custom_id not in self._sent:
                due = min(self._arrived_at + self._gather_s, self._opened_at + GATHER_MAX_S)
                if self._open and not self._sending and (self._coming <= 0 or time.monotonic() >= due):
                    self._send_open()
                else:
                    # nothing gathered or a batch being created: woken when it is; else until the window is due
                    idle = self._sending or not self._open
                    self._cond.wait(timeout=None if idle else max(due - time.monotonic(), 0.005))
            sent = self._sent.pop(item.custom_id)
        if isinstance(sent, BaseException):
            raise copy.copy(sent)   # each caller raises its own (the threads share nothing of it)
        return sent

    def _send_open(self) -> None:
        """Hold the gathered items (`on_hold`) and create a batch of those held (the lock is released
        meanwhile; later calls gather anew). A refusal that is not the provider's (a 4xx: one bad request refuses the whole batch) is followed
        by sending each item alone, so it stays with the item that caused it."""
        items, self._open = self._open, []
        self._sending = True
        self._cond.release()
        try:
            held = self._held(items)
            ready = [item for item in held if isinstance(item, BatchItem)]
            groups = [ready] if ready else []
            outcomes = self._create(groups)
            if len(ready) > 1 and isinstance(outcomes[0], LLMError) and not outcomes[0].retryable:
                groups = [[item] for item in ready]
                outcomes = self._create(groups)
            went: dict[str, Sent | BaseException] = {}
            for group, outcome in zip(groups, outcomes):
                stored = isinstance(outcome, str) and self._stored(outcome, group)
                went.update((item.custom_id, Sent(outcome, stored, item) if isinstance(outcome, str) else outcome)
                            for item in group)
            sent = [went[item.custom_id] if isinstance(item, BatchItem) else item for item in held]
        finally:
            self._cond.acquire()
            self._sending = False
        for item, done in zip(items, sent):
            self._sent[item.custom_id] = done
            if isinstance(done, Sent):   # one look answers every item sent, whenever its caller waits
                self._waiting.setdefault(done.batch_id, {})[item.custom_id] = done.item
        self._cond.notify_all()

    def _held(self, items: list[BatchItem]) -> list[BatchItem | BaseException]:
        """`on_hold` for the gathered items: each as it will be sent, or why it is not (its hold refused);
        if it fails, no item goes."""
        if self._on_hold is None:
            return list(items)
        try:
            return self._on_hold(items)
        except BaseException as exc:
            return [exc] * len(items)

    def _stored(self, batch_id: str, group: list[BatchItem]) -> bool:
        """`on_sent` for a created batch. One that fails leaves its callers to store their own ids (the
        batch exists: an error then is theirs)."""
        if self._on_sent is None:
            return False
        try:
            self._on_sent(batch_id, [item.custom_id for item in group])
        except BaseException:
            return False
        return True

    def _create(self, groups: list[list[BatchItem]]) -> list[str | BaseException]:
        """A batch per group: its id, or why it was not created (nothing of it was sent)."""
        out: list[str | BaseException] = []
        for group in groups:
            try:
                out.append(self._client.submit_batch(group))
            except BaseException as exc:
                out.append(exc)
        return out

    def answer(self, batch_id: str, item: BatchItem, deadline: float) -> BatchAnswer | None:
        """`item`'s answer once its batch has ended; None if it is still running at `deadline`
        (time.monotonic()). A retryable API error while looking counts as a look at a running batch (see
        `trouble`); any other goes to the waiter that looked."""
        with self._cond:
            if item.custom_id not in self._answers:   # (a batch another process sent: not known yet)
                self._waiting.setdefault(batch_id, {})[item.custom_id] = item
            # Looked for at least once, whatever the deadline (a batch may have ended long ago): by a look
            # begun after the item waits, whoever made it (one each, in turn, would take 56 looks, and in
            # an outage 56 times the SDK's retries).
            before = self._begun.get(batch_id, 0)
            try:
                while item.custom_id not in self._answers:
                    left = deadline - time.monotonic()
                    if batch_id in self._looking:
                        self._cond.wait(timeout=left if left > 0 else None)
                    elif stopping.requested() or (self._begun.get(batch_id, 0) > before and left <= 0
                                                  and batch_id not in self._ended):
                        return None   # collected later (batch_sensor, or the work's re-run)
                    else:
                        self._look(batch_id, deadline)
                return self._answers.pop(item.custom_id)
            finally:
                waiting = self._waiting.get(batch_id)
                if waiting is not None:
                    waiting.pop(item.custom_id, None)
                    if not waiting:
                        del self._waiting[batch_id]
                        self._looks.pop(batch_id, None)
                        self._begun.pop(batch_id, None)
                        self._ended.discard(batch_id)

    def _look(self, batch_id: str, deadline: float) -> None:
        """One look at the batch for everyone waiting on it, after the pause its look count calls for."""
        looks = self._looks.get(batch_id, 0)
        pause = 0.0 if looks == 0 else min(self._poll_s, FIRST_POLL_S * POLL_GROWTH ** (looks - 1))
        self._looking.add(batch_id)
        self._cond.release()
        made = False   # a look that raised (a settlement that failed) is no look for the other waiters
        ended = False  # ... and one that saw the batch ended keeps them from giving up: they look again
        try:
            stopping.pause(min(pause, deadline - time.monotonic()))
            with self._cond:   # the items waiting now are the ones this look looks for
                items = list(self._waiting.get(batch_id, {}).values())
                self._begun[batch_id] = self._begun.get(batch_id, 0) + 1
            try:
                answers = self._client.collect_batch(batch_id, items)
                self.trouble.pop(batch_id, None)
            except LLMError as exc:
                if not exc.retryable:
                    raise
                # The API cannot say now (an outage, a rate limit), but the batch goes on and will bill:
                # looked at again later, and at the deadline its work waits for it like a running one.
                answers, self.trouble[batch_id] = None, str(exc)
            if answers is not None:   # only the items looked for: settled before any waiter takes one
                ended = True
                answers = {item.custom_id: answers[item.custom_id] for item in items if item.custom_id in answers}
                if self._on_answers is not None:
                    self._on_answers(batch_id, answers)
            made = True
        finally:
            self._cond.acquire()
            self._looks[batch_id] = looks + 1
            if not made and batch_id in self._begun:
                self._begun[batch_id] -= 1
            if ended and not made and batch_id in self._waiting:
                self._ended.add(batch_id)
            self._looking.discard(batch_id)
            self._cond.notify_all()
        if answers is None:
            return
        # Ended: every item looked for is answered (with a result or why not); one that came to wait
        # meanwhile is looked for at once.
        waiting = self._waiting.get(batch_id, {})
        for cid, answer in answers.items():
            if waiting.pop(cid, None) is not None:
                self._answers[cid] = answer
        self._looks[batch_id] = 0
        self._ended.discard(batch_id)
        if not waiting:
            self._waiting.pop(batch_id, None)
            self._looks.pop(batch_id, None)
            self._begun.pop(batch_id, None)
