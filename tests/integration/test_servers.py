"""The fixtures hand out real servers, not stand-ins."""

import psycopg
import redis


def test_postgres_is_a_real_server(module_database_url: str) -> None:
    with psycopg.connect(module_database_url) as conn:
        row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
    assert row is not None and row[0] >= 150000


def test_redis_is_a_real_server(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        key = "edgemart-test:fixture-probe"
        assert client.ping() is True
        client.set(key, "1", px=5000)
        assert client.incr(key) == 2
        assert client.eval("return redis.call('GET', KEYS[1])", 1, key) == b"2"
        client.delete(key)
    finally:
        client.close()
