"""When the cyclic garbage collector may run while the console polls.

A poll at 100,000 GPUs makes some 100,000 container objects (rows, jobs, nodes). Left
to itself, the cyclic GC scans them in every generation as they age, and its full
passes over everything alive (100-150 ms with the demo's simulator in the process) land
wherever the allocation count tips over: in the middle of the next poll or on the event
loop while the screen is painted. ``PollGc`` moves that work out of the poll -> screen
path:

* while the poller builds a frame, the collector is off (nothing it could free yet);
* once the frame is built, ``gc.freeze()`` moves every object alive into the permanent
  generation, which the collector never scans. Frozen objects are still freed by
  reference counting, and a frame is acyclic (frozen dataclasses, tuples, lists and
  arrays that point down, never back up), so the frame the next poll replaces is freed
  at once, frozen or not: nothing of ours leaks;
* what is cyclic is Textual's (render caches: strips and their caches point at each
  other). Any of it alive at a freeze waits for the next full collection, so every
  ``full_every`` polls, after the screen shows the new frame, everything is unfrozen
  and collected in one full pass, between polls. The app unfreezes when it exits.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class PollGc:
    full_every: int = 30  # polls between full collections (a minute at the 2 s default)
    polls: int = 0
    frozen: bool = False
    last_full_seconds: float | None = None  # how long the last full collection took

    @contextmanager
    def building(self) -> Iterator[None]:
        """Around a poll's build, in the poller thread."""
        if not gc.isenabled():  # the collector is off for the whole process: leave it so
            yield
            return
        gc.disable()
        try:
            yield
            gc.freeze()  # only a frame that was built: a failed poll made nothing to keep
            self.frozen = True
        finally:
            gc.enable()

    def painted(self) -> None:
        """On the event loop, once the screen shows a new frame."""
        self.polls += 1
        if self.frozen and self.polls % self.full_every == 0:
            self.collect()

    def collect(self) -> float:
        """Unfreeze and run one full collection; returns the seconds it took."""
        start = time.perf_counter()
        self.release()
        gc.collect()
        self.last_full_seconds = time.perf_counter() - start
        return self.last_full_seconds

    def release(self) -> None:
        if self.frozen:
            gc.unfreeze()
            self.frozen = False
