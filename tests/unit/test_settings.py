import ipaddress
from pathlib import Path

import pytest

from edgemart.settings import Settings, SettingsError


def test_defaults_when_nothing_is_set() -> None:
    settings = Settings.from_env({})
    assert settings.database_url is None
    assert settings.access_log_sample_rate == 0.01
    assert settings.max_body_bytes == 65536
    assert settings.kill_switch_cooldown_s == 60
    assert settings.trusted_proxies == ()
    assert settings.data_dir == Path(".edgemart-data")


def test_reads_every_documented_variable() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://db/x",
            "DATABASE_POOLER": "transaction",
            "DB_POOL_MAX_SIZE": "3",
            "REDIS_URL": "redis://r:6379/0",
            "EDGEMART_DATA_DIR": "/tmp/em",
            "LOG_LEVEL": "debug",
            "ACCESS_LOG_SAMPLE_RATE": "0.5",
            "TRUSTED_PROXIES": "10.0.0.0/8, 2001:db8::/32",
            "JWT_SECRET": "s",
            "KILL_SWITCH_COOLDOWN_S": "5",
        }
    )
    assert settings.database_url == "postgresql://db/x"
    assert settings.database_pooler == "transaction"
    assert settings.db_pool_max_size == 3
    assert settings.redis_url == "redis://r:6379/0"
    assert settings.data_dir == Path("/tmp/em")
    assert settings.log_level == "DEBUG"
    assert settings.access_log_sample_rate == 0.5
    assert settings.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    assert settings.kill_switch_cooldown_s == 5


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DB_POOL_MAX_SIZE", "ten", "DB_POOL_MAX_SIZE must be an integer"),
        ("DB_POOL_MAX_SIZE", "0", "DB_POOL_MAX_SIZE must be >= 1"),
        ("ACCESS_LOG_SAMPLE_RATE", "1.5", "ACCESS_LOG_SAMPLE_RATE must be between 0 and 1"),
        ("ACCESS_LOG_SAMPLE_RATE", "nan", "ACCESS_LOG_SAMPLE_RATE must be between 0 and 1"),
        ("DATABASE_POOLER", "statement", "DATABASE_POOLER must be one of session, transaction"),
        ("TRUSTED_PROXIES", "10.0.0.0/8,not-an-ip", "'not-an-ip' is not an IP network"),
        ("LOG_LEVEL", "chatty", "LOG_LEVEL must be one of"),
    ],
)
def test_bad_values_are_errors_naming_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({name: value})


def test_empty_values_count_as_unset() -> None:
    assert Settings.from_env({"DATABASE_URL": "  ", "DB_POOL_MAX_SIZE": ""}) == Settings()
