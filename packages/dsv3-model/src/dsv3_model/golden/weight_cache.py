"""`WeightCache`: the resident weights of a streamed run, least recently used first out, bounded in bytes.

Entries are whatever one load produces (a materialized decoder layer, the head, one expert's two
matrices). The caller says how many bytes an entry will hold before loading it, so room is made first
and the bound holds at the load's peak too; an entry larger than the whole capacity is used once and
not kept (it is re-read next time, from the page cache when the machine has room for it there).

Two kinds of entry, because their reuse differs: every model call runs every layer (and the head), while
a routed expert comes back only when a later token chooses it again. An expert is therefore kept only
in room that is free (`offer` evicts nothing), and a layer makes room by evicting experts first. Were
experts allowed to push layers out, a decode step whose experts exceed the cache would evict, in LRU's
cyclic order, exactly the layers the next step needs first, and every step would re-read everything
(bench_golden before this rule: 271 MiB read per token, after: 192 MiB, the chosen experts alone). Nor
do experts evict experts: keeping one costs a copy out of the stack buffer (a fresh 24 MiB on the
benchmark, page faults included: 65 instead of 36 ms per expert), which a random expert rarely repays.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar, cast

T = TypeVar("T")

LAYER, EXPERT = "layer", "expert"


class WeightCache:
    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes < 0:
            raise ValueError(f"cache capacity must be >= 0 bytes, got {capacity_bytes}")
        self.capacity_bytes = capacity_bytes
        self._entries: OrderedDict[str, tuple[Any, int, str]] = OrderedDict()
        self.resident_bytes = 0
        self.peak_resident_bytes = 0
        self.loads = 0
        self.hits = 0

    def get(self, key: str, nbytes: int, load: Callable[[], T]) -> T:
        """The entry `key` (a layer or the head), loading it when absent after making room for `nbytes`:
        by evicting experts (least recently used first) if they free enough, else entries of any kind."""
        if key in self._entries:
            return cast(T, self.lookup(key))
        keep = self._make_room(nbytes, (EXPERT,)) or self._make_room(nbytes, (EXPERT, LAYER))
        value = load()
        self.loads += 1
        if keep:
            self._insert(key, value, nbytes, LAYER)
        return value

    def offer(self, key: str, nbytes: int, make: Callable[[], Any]) -> None:
        """Keep `make()` (an expert just loaded) under `key` if `nbytes` fit in the free room."""
        if key not in self._entries and self._make_room(nbytes, ()):
            self._insert(key, make(), nbytes, EXPERT)

    def count_load(self) -> None:
        """A load made outside `get` (an expert read into the stack buffer)."""
        self.loads += 1

    def lookup(self, key: str) -> Any | None:
        """The entry `key` (now the most recently used), or None."""
        if key not in self._entries:
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return self._entries[key][0]

    def _make_room(self, nbytes: int, evictable: tuple[str, ...]) -> bool:
        """Evict the least recently used entries of the `evictable` kinds until `nbytes` fit; False if
        they cannot (nothing is evicted then)."""
        if nbytes > self.capacity_bytes:
            return False
        candidates = [(key, size) for key, (_, size, kind) in self._entries.items() if kind in evictable]
        free, victims = self.capacity_bytes - self.resident_bytes, []
        for key, size in candidates:
            if free >= nbytes:
                break
            victims.append(key)
            free += size
        if free < nbytes:
            return False
        for key in victims:
            self.resident_bytes -= self._entries.pop(key)[1]
        return True

    def _insert(self, key: str, value: Any, nbytes: int, kind: str) -> None:
        self._entries[key] = (value, nbytes, kind)
        self.resident_bytes += nbytes
        self.peak_resident_bytes = max(self.peak_resident_bytes, self.resident_bytes)

    def clear(self) -> None:
        """Drop every entry (the end of a run: its weights go back to the system at once, whatever
        still references the cache)."""
        self._entries.clear()
        self.resident_bytes = 0

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)
