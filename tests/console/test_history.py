"""The console's count history (read from the journal, anchored at the counts now), its chart,
and namespace keys read back into ids."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memvault.errors import InvalidInput
from memvault.memory import Memory
from memvault.server.auth import Principal
from memvault.server.console import chart
from memvault.server.console import history as hist
from memvault.server.console.history import Bucket, CountHistory, Point
from memvault.server.console.namespaces import entity_ids, visible_counts
from memvault.store import namespace_key


def _series(memory: Memory, history: CountHistory, namespaces: set[str] | None = None
            ) -> hist.Series:
    return history.series(memory.store.meta().store_id, memory.store.counts(), namespaces)


def test_a_wiped_namespace_is_the_largest_drop_and_later_views_read_only_new_entries(
        memory: Memory) -> None:
    for i in range(5):
        memory.add(f"a fact {i}", user_id="a", infer=False)
    memory.add("b fact", user_id="b", infer=False)
    history = CountHistory(memory)
    first = _series(memory, history)
    assert first.now == 6 and first.drop is None and first.points[-1].total == 6
    memory.delete_all(user_id="a")
    memory.add("b again", user_id="b", infer=False)
    series = _series(memory, history)
    assert series.now == 2
    assert series.drop is not None and (series.drop.peak, series.drop.low) == (6, 1)
    assert [p.total for p in series.points][-1] == 2
    only_b = _series(memory, history, {namespace_key("b", None, None)})
    assert only_b.drop is None and only_b.now == 2
    svg = chart.render(series, series.points[-1].at)
    assert "drop: 6 → 1 (-5, 83%)" in svg and 'class="drop"' in svg
    assert chart.drop_text(series).startswith("largest drop: 6 → 1 memories (-5, 83%)")


def test_memories_loaded_without_journal_entries_are_the_starting_count(
        memory: Memory) -> None:
    memory.add("one", user_id="a", infer=False)
    counts = {**memory.store.counts(), "user:restored": 40}  # e.g. bulk-loaded by a restore
    series = CountHistory(memory).series(memory.store.meta().store_id, counts)
    assert series.now == 41 and series.points[0].total == 41 and series.drop is None


def test_a_bucket_keeps_a_fall_and_rise_inside_it_and_merges_in_order() -> None:
    bucket = Bucket()
    for _ in range(10):
        bucket.add("a", 1)
    for _ in range(7):
        bucket.add("a", -1)
    bucket.add("b", 1)
    assert bucket.path == [10, 3, 4] and dict(bucket.changes) == {"a": 3, "b": 1}
    later = Bucket()
    later.add("a", -2)
    bucket.absorb(later)
    assert bucket.path == [10, 3, 4, 2] and dict(bucket.changes) == {"a": 1, "b": 1}


def test_a_long_history_is_coarsened_and_keeps_its_drop(memory: Memory,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hist, "MAX_BUCKETS", 100)
    monkeypatch.setattr(hist, "KEEP_FINE", 10)
    history = CountHistory(memory)
    for i in range(300):  # 300 seconds of adds, then 250 memories deleted in one second
        history._bucket(f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}").add("user:a", 1)
    history._bucket("2026-01-01T00:05:30").add("user:a", -250)
    assert len(history._buckets) <= hist.MAX_BUCKETS
    assert sum(sum(b.changes.values()) for b in history._buckets.values()) == 50
    history._store_id = memory.store.meta().store_id
    history._after_seq = 10**9  # nothing more to read from the store
    series = history.series(history._store_id, {"user:a": 50})
    assert series.drop is not None and (series.drop.peak, series.drop.low) == (300, 50)


def test_thinning_keeps_the_lowest_and_highest_points() -> None:
    points = [Point(f"2026-01-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}", i)
              for i in range(5000)]
    points[2500] = Point(points[2500].at, -7)
    thinned = hist._thin(points)
    assert len(thinned) <= hist.MAX_POINTS + 1
    assert min(p.total for p in thinned) == -7 and thinned[-1] == points[-1]


ids = st.one_of(st.none(), st.text(min_size=1, max_size=12))


@settings(max_examples=200, deadline=None)
@given(ids, ids, ids)
def test_namespace_keys_read_back_into_their_ids(user: str | None, agent: str | None,
                                                 run: str | None) -> None:
    key = namespace_key(user, agent, run)
    assert entity_ids(key) == {"user_id": user, "agent_id": agent, "run_id": run}


@pytest.mark.parametrize("key", ["user", "team:x", "user:a/user:b", "user:a%2", "user:a%2f"])
def test_a_key_namespace_key_cannot_make_is_refused(key: str) -> None:
    with pytest.raises(InvalidInput):
        entity_ids(key)


def test_a_scoped_key_counts_only_its_namespaces() -> None:
    counts = {"user:bob": 3, "user:bob/agent:x": 2, "user:alice": 9, "not a key": 1}
    bob = Principal(admin=False, key_id="k", scope={"user_id": "bob"})
    assert [n.key for n in visible_counts(counts, bob)] == ["user:bob", "user:bob/agent:x"]
    admin = visible_counts(counts, Principal(admin=True))
    assert [n.key for n in admin] == ["user:alice", "user:bob", "user:bob/agent:x", "not a key"]
