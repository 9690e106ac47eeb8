"""`WeightCache`: the byte bound, LRU order, and experts kept only in free room (hand cases)."""

from __future__ import annotations

from dsv3_model.golden.weight_cache import WeightCache


def test_experts_never_push_out_a_layer():
    cache = WeightCache(100)
    assert cache.get("layer 1", 60, lambda: "L1") == "L1"
    cache.offer("e1", 30, lambda: "E1")  # 40 bytes free: kept
    cache.offer("e2", 30, lambda: "E2")  # 10 free: not kept, and nothing evicted for it
    assert [key for key in ("layer 1", "e1", "e2") if key in cache] == ["layer 1", "e1"]
    assert (cache.resident_bytes, cache.peak_resident_bytes) == (90, 90)


def test_a_layer_evicts_least_recently_used_of_any_kind():
    cache = WeightCache(100)
    cache.get("layer 1", 60, lambda: "L1")
    cache.offer("e1", 30, lambda: "E1")
    assert cache.lookup("layer 1") == "L1"  # now e1 is the least recently used
    cache.get("layer 2", 40, lambda: "L2")  # 10 free: e1 goes first, which is enough
    assert [key for key in ("layer 1", "e1", "layer 2") if key in cache] == ["layer 1", "layer 2"]
    cache.get("layer 3", 70, lambda: "L3")  # layer 1 then layer 2 go
    assert [key for key in ("layer 1", "layer 2", "layer 3") if key in cache] == ["layer 3"]
    assert (cache.resident_bytes, cache.peak_resident_bytes) == (70, 100)


def test_larger_than_capacity_is_used_once_and_not_kept():
    cache = WeightCache(10)
    cache.get("layer 1", 8, lambda: "L1")
    assert cache.get("head", 11, lambda: "H") == "H"
    assert [key for key in ("layer 1", "head") if key in cache] == ["layer 1"]  # nothing evicted for it
    assert (cache.loads, cache.hits) == (2, 0)
