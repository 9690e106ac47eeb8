"""`WeightCache`: the resident weights of a streamed run, least recently used first out, bounded in bytes.

Entries are whatever one load produces (a materialized decoder layer, one expert's two matrices). The
caller says how many bytes an entry will hold before loading it, so room is made first and the bound
holds at the load's peak too; an entry larger than the whole capacity is used once and not kept (it
is re-read next time, from the page cache when the machine has room for it there).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar, cast

T = TypeVar("T")


class WeightCache:
    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes < 0:
            raise ValueError(f"cache capacity must be >= 0 bytes, got {capacity_bytes}")
        self.capacity_bytes = capacity_bytes
        self._entries: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self.resident_bytes = 0
        self.peak_resident_bytes = 0
        self.loads = 0
        self.hits = 0

    def get(self, key: str, nbytes: int, load: Callable[[], T]) -> T:
        """The entry `key`, loading it (after evicting enough older entries for `nbytes`) when absent."""
        if key in self._entries:
            return cast(T, self.lookup(key))
        keep = nbytes <= self.capacity_bytes
        if keep:
            while self._entries and self.resident_bytes + nbytes > self.capacity_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self.resident_bytes -= evicted
        value = load()
        self.loads += 1
        if keep:
            self._entries[key] = (value, nbytes)
            self.resident_bytes += nbytes
            self.peak_resident_bytes = max(self.peak_resident_bytes, self.resident_bytes)
        return value

    def lookup(self, key: str) -> Any | None:
        """The entry `key` (now the most recently used), or None."""
        if key not in self._entries:
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return self._entries[key][0]

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)
