"""What `serve` settles before its workers start: one cursor secret for all of them, and
what it warns about when several workers would each keep their own state."""

from __future__ import annotations

from edgemart.settings import Settings
from gateway.serve import kept_per_worker, with_shared_cursor_secret

RATE_LIMITS = "rate limits (each worker allows the whole limit)"


def kept(**environment: str) -> list[str]:
    return [item.split(" (")[0] for item in kept_per_worker(Settings.from_env(environment))]


def test_one_cursor_secret_for_every_worker_unless_one_is_set() -> None:
    made = with_shared_cursor_secret(Settings.from_env({}))
    assert made.cursor_secret and len(made.cursor_secret) >= 32
    assert with_shared_cursor_secret(made) == made
    assert with_shared_cursor_secret(Settings.from_env({})).cursor_secret != made.cursor_secret
    configured = Settings.from_env({"CURSOR_SECRET": "configured"})
    assert with_shared_cursor_secret(configured).cursor_secret == "configured"


def test_what_several_workers_keep_apart() -> None:
    assert kept() == ["rate limits", "buffered counts"]
    assert kept(REDIS_URL="redis://127.0.0.1:6379/0") == []
    assert kept(REDIS_URL="redis://x", RATE_LIMIT_BACKEND="memory") == ["rate limits"]
    upstash = {"UPSTASH_REDIS_REST_URL": "https://u", "UPSTASH_REDIS_REST_TOKEN": "t"}
    assert kept(**upstash) == ["buffered counts"]
    assert kept(UPSTASH_REDIS_REST_URL="https://u") == ["rate limits", "buffered counts"]
    assert RATE_LIMITS in kept_per_worker(Settings.from_env({}))
