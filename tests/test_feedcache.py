"""The feed cache on a real Postgres: memory bounded, newer copies win, writes land
behind the answer and then run what follows them."""

from __future__ import annotations

from datetime import timedelta

from gateway.outcomes import CachedFeed
from gateway.service.feedcache import FeedCache
from gateway.service.tasks import BackgroundTasks
from gateway.sources.base import NormalizedArticle, Validators
from gateway.store.db import Database
from tests.clock import FakeClock


def feed(clock: FakeClock, *titles: str, age_s: float = 0) -> CachedFeed:
    articles = [NormalizedArticle(id=t, source_id="src", title=t, url=f"https://x.example/{t}") for t in titles]
    return CachedFeed.build(articles, 0, clock.now() - timedelta(seconds=age_s), Validators('"e"', None))


async def test_memory_is_bounded_and_newer_copies_win(db: Database) -> None:
    clock = FakeClock()
    cache = FeedCache(db, BackgroundTasks(), capacity=2, clock=clock)
    old, new = feed(clock, "a", age_s=60), feed(clock, "b")
    assert cache.adopt(("src", "k"), new) is new
    assert cache.adopt(("src", "k"), old) is new  # an older stored copy does not replace it
    for key in ("k2", "k3"):
        cache.adopt(("src", key), feed(clock, key))
    assert cache.get(("src", "k")) is None  # the least recently used went
    clock.advance(30)
    assert cache.age(new) == 30


async def test_store_writes_behind_then_runs_what_follows(db: Database) -> None:
    clock = FakeClock()
    tasks = BackgroundTasks()
    cache = FeedCache(db, tasks, capacity=10, clock=clock)
    followed: list[str] = []

    async def then() -> None:
        followed.append("released")

    stored = feed(clock, "a", "b")
    cache.store(("src", "latest"), stored, then=then)
    assert cache.get(("src", "latest")) is stored  # memory at once
    await tasks.drain(timeout_s=5)
    assert followed == ["released"]
    again = await cache.read("src", "latest")
    assert again is not None and [a.id for a in again.articles] == ["a", "b"]
    assert again.validators == Validators('"e"', None) and again.fetched_at == stored.fetched_at
    assert await db.run(lambda conn: conn.fetchval("SELECT count(*) FROM articles")) == 2


async def test_a_database_that_is_away_costs_the_cache_not_the_answer(db: Database) -> None:
    clock = FakeClock()
    tasks = BackgroundTasks()
    cache = FeedCache(db, tasks, capacity=10, clock=clock)
    await db.close()
    assert await cache.read("src", "latest") is None
    cache.store(("src", "latest"), feed(clock, "a"))
    await tasks.drain(timeout_s=5)
    assert cache.get(("src", "latest")) is not None
