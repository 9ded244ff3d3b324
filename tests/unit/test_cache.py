"""The audio cache on its own: atomic entries, LRU by size, TTL, restarts, damage."""

from __future__ import annotations

from pathlib import Path

import pytest

from chorus.server.cache import AudioCache, CacheEntry, cache_key
from chorus.server.rate_limit import ClientLimiter, TooManyRequests, client_id


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def entry(size: int, voice: str = "v") -> CacheEntry:
    return CacheEntry(bytes([size % 251]) * size, "audio/wav", 1.5, 22050, voice)


async def make(directory: Path, max_bytes: int = 1 << 20, ttl: float = 3600,
               clock: Clock | None = None) -> AudioCache:
    cache = AudioCache(directory, max_bytes, ttl, clock or Clock())
    await cache.start()
    return cache


def test_key_is_stable_and_sensitive() -> None:
    base = {"voice": "joe", "text": "Hi.", "noise_scale": None, "fingerprint": [1, 2]}
    assert cache_key(**base) == cache_key(**dict(reversed(base.items())))
    for change in ({"text": "Hi!"}, {"noise_scale": 0.0}, {"fingerprint": [1, 3]}):
        assert cache_key(**{**base, **change}) != cache_key(**base)


async def test_miss_put_hit_and_survives_restart(tmp_path: Path) -> None:
    cache = await make(tmp_path)
    assert await cache.get("k") is None
    await cache.put("k", entry(1000))
    assert await cache.get("k") == entry(1000)
    assert (cache.hits, cache.misses, cache.entries) == (1, 1, 1)
    assert cache.bytes > 1000
    again = await make(tmp_path)
    assert await again.get("k") == entry(1000)
    assert again.bytes == cache.bytes


async def test_ttl_expires_entries(tmp_path: Path) -> None:
    clock = Clock()
    cache = await make(tmp_path, ttl=10, clock=clock)
    await cache.put("k", entry(10))
    clock.now = (tmp_path / "k.audio").stat().st_mtime + 11
    assert await cache.get("k") is None
    assert cache.entries == 0 and not (tmp_path / "k.audio").exists()


async def test_lru_eviction_by_size_follows_use(tmp_path: Path) -> None:
    cache = await make(tmp_path, max_bytes=3500)
    for key in ("a", "b", "c"):
        await cache.put(key, entry(1000))
    assert await cache.get("a") is not None  # a is now the most recent
    await cache.put("d", entry(1000))  # over the limit: b (least recent) goes
    assert await cache.get("b") is None
    assert all([await cache.get(k) for k in ("a", "c", "d")])
    assert cache.bytes <= 3500 and not (tmp_path / "b.audio").exists()
    await cache.put("huge", entry(10_000))  # larger than the whole cache: not stored
    assert await cache.get("huge") is None and cache.entries == 3


async def test_restart_keeps_recency_from_atime(tmp_path: Path) -> None:
    cache = await make(tmp_path, max_bytes=10_000)
    for key in ("old", "new"):
        await cache.put(key, entry(1000))
    await cache.get("old")  # sets old's atime later than new's
    await cache.close()  # what a graceful shutdown does
    smaller = await make(tmp_path, max_bytes=1500)
    assert smaller.entries == 1
    assert await smaller.get("old") is not None


async def test_temp_files_are_removed_and_damage_is_a_miss(tmp_path: Path) -> None:
    (tmp_path / ".tmp-k-123").write_bytes(b"half an entry")
    (tmp_path / "bad.audio").write_bytes(b"not an entry")
    cache = await make(tmp_path)
    assert not (tmp_path / ".tmp-k-123").exists()
    assert await cache.get("bad") is None
    assert await cache.get("k") is None
    assert cache.entries == 0


async def test_clear(tmp_path: Path) -> None:
    cache = await make(tmp_path)
    await cache.put("k", entry(10))
    await cache.clear()
    assert (cache.entries, cache.bytes) == (0, 0)
    assert not list(tmp_path.glob("*.audio"))


def test_client_limiter_counts_in_progress_requests() -> None:
    limiter = ClientLimiter(2)
    with limiter.hold("a"), limiter.hold("a"):
        with pytest.raises(TooManyRequests), limiter.hold("a"):
            pass
        with limiter.hold("b"):
            assert limiter.active("b") == 1
    with limiter.hold("a"):
        assert limiter.active("a") == 1
    assert limiter.active("a") == 0
    assert client_id("1.2.3.4") == "addr:1.2.3.4"


async def test_recent_hits_are_served_from_memory(tmp_path: Path) -> None:
    cache = await make(tmp_path)
    await cache.put("k", entry(1000))
    reads: list[str] = []
    original = cache._read

    def counting_read(key: str) -> CacheEntry | None:
        reads.append(key)
        return original(key)

    cache._read = counting_read  # type: ignore[method-assign]
    for _ in range(3):
        assert await cache.get("k") == entry(1000)
    assert reads == []  # no disk read, no thread hop
    restarted = await make(tmp_path)
    restarted._read = counting_read  # type: ignore[method-assign]
    assert await restarted.get("k") == entry(1000)  # a fresh process reads the disk once
    assert await restarted.get("k") == entry(1000)
    assert reads == ["k"]
    await restarted.clear()
    assert await restarted.get("k") is None  # clearing empties the memory tier too


async def test_write_failures_warn_once_and_recovery_is_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "cache"
    cache = await make(directory)
    directory.rmdir()
    directory.write_bytes(b"")  # the directory is now a file: every write fails
    caplog.set_level("DEBUG", logger="chorus.server.cache")
    for n in range(3):
        await cache.put(f"k{n}", entry(100))
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "Cannot write to the audio cache" in warnings[0].message
    assert (cache.entries, cache.write_errors) == (0, 3)
    assert cache.stats()["write_errors"] == 3
    directory.unlink()
    await cache.put("k", entry(100))
    assert await cache.get("k") == entry(100)
    assert "writes succeed again (3 failed meanwhile)" in caplog.text
    await cache.put("k2", entry(100))
    assert caplog.text.count("writes succeed again (") == 1


async def test_a_damaged_entry_is_deleted_not_served(tmp_path: Path) -> None:
    cache = await make(tmp_path)
    await cache.put("k", entry(1000))
    path = tmp_path / "k.audio"
    path.write_bytes(path.read_bytes()[:-10])  # torn: shorter than its header says
    restarted = await make(tmp_path)
    assert restarted.entries == 1
    assert await restarted.get("k") is None
    assert not path.exists() and restarted.entries == 0
