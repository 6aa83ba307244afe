import dataclasses
import ipaddress
import re
import typing
from pathlib import Path

import pytest
import yaml

from edgemart import settingsdocs
from edgemart.ratelimit.groups import DEFAULT_POLICIES
from edgemart.ratelimit.policies import WINDOW_S
from edgemart.settings import (
    DECLARED,
    RATE_LIMIT_GROUPS,
    UNSET,
    Choice,
    Concern,
    Currency,
    FilePath,
    Integer,
    Intervals,
    Networks,
    Number,
    Origins,
    RateLimits,
    Settings,
    SettingsError,
    Text,
    declared_settings,
    environment_value,
    setting,
)


def test_defaults_when_nothing_is_set() -> None:
    settings = Settings.from_env({})
    assert settings.database_url is None
    assert settings.access_log_sample_rate == 0.01
    assert settings.max_body_bytes == 65536
    assert settings.kill_switch_cooldown_s == 60
    assert settings.trusted_proxies == ()
    assert settings.data_dir == Path(".edgemart-data")


@pytest.mark.parametrize(
    ("variable", "value", "field", "parsed"),
    [
        ("DATABASE_URL", "postgresql://db/x", "database_url", "postgresql://db/x"),
        ("DATABASE_POOLER", "transaction", "database_pooler", "transaction"),
        ("DATABASE_POOLER", "Transaction", "database_pooler", "transaction"),
        ("DB_POOL_MAX_SIZE", "3", "db_pool_max_size", 3),
        ("REDIS_URL", "redis://r:6379/0", "redis_url", "redis://r:6379/0"),
        ("EDGEMART_DATA_DIR", "/tmp/em", "data_dir", Path("/tmp/em")),
        ("LOG_LEVEL", "debug", "log_level", "DEBUG"),
        ("ACCESS_LOG_SAMPLE_RATE", "0.5", "access_log_sample_rate", 0.5),
        (
            "TRUSTED_PROXIES",
            "10.0.0.0/8, 2001:db8::/32",
            "trusted_proxies",
            (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")),
        ),
        ("JWT_SECRET", "s", "jwt_secret", "s"),
        ("KILL_SWITCH_COOLDOWN_S", "5", "kill_switch_cooldown_s", 5),
        ("MARKETPLACE_CURRENCY", "eur", "marketplace_currency", "EUR"),
        (
            "CORS_ALLOW_ORIGINS",
            " https://Shop.example , ,http://localhost:3000",
            "cors_allow_origins",
            ("https://shop.example", "http://localhost:3000"),
        ),
        ("RATE_LIMIT_ADMIN", "OFF", "rate_limit_overrides", (("admin", 0, 60),)),
        ("JWT_MAX_TOKEN_LIFETIME_S", " 600 ", "jwt_max_token_lifetime_s", 600),
    ],
)
def test_reads_a_variable_into_its_field(
    variable: str, value: str, field: str, parsed: object
) -> None:
    """Words in any case, lists with spaces around their items."""
    assert getattr(Settings.from_env({variable: value}), field) == parsed


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
        ("PLATFORM_FEE_BPS", "10001", "PLATFORM_FEE_BPS must be <= 10000, got 10001"),
        ("JWT_LEEWAY_S", "301", "JWT_LEEWAY_S must be between 0 and 300.0, got '301'"),
        ("DB_POOL_TIMEOUT_S", "-1", "DB_POOL_TIMEOUT_S must be >= 0, got '-1'"),
        ("MARKETPLACE_CURRENCY", "XTS", "MARKETPLACE_CURRENCY must be an ISO 4217 currency code"),
        ("CORS_ALLOW_ORIGINS", "https://a.example/x", "'https://a.example/x' is not an origin"),
        ("RATE_LIMIT_SEARCH", "ten/60", "RATE_LIMIT_SEARCH must be LIMIT/WINDOW_SECONDS or off"),
        ("RATE_LIMIT_SEARCH", "0/60", "RATE_LIMIT_SEARCH needs a limit and a window of at least"),
        (
            "SCHEDULE_INTERVALS",
            "heartbeat=0",
            "SCHEDULE_INTERVALS: 'heartbeat=0' is not name=seconds",
        ),
        ("SCHEDULE_INTERVALS", "a=1,b=2,a=3", "SCHEDULE_INTERVALS names a more than once"),
    ],
)
def test_bad_values_are_errors_naming_the_variable(name: str, value: str, message: str) -> None:
    """Each message names its variable, in the wording given here."""
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env({name: value})


def test_empty_values_count_as_unset() -> None:
    assert Settings.from_env({"DATABASE_URL": "  ", "DB_POOL_MAX_SIZE": ""}) == Settings()


# ---- The declarations: one per setting, from which variables, parsing and docs derive ----

ROOT = Path(__file__).parents[2]
CONFIGURATION_PAGE = ROOT / "docs" / "configuration.md"
VARIABLES = {variable.name: variable for variable in settingsdocs.variables()}
PARSERS = {variable: declared.parser for declared in DECLARED for variable in declared.variables}
FREE_TEXT = (Text, FilePath)  # parsers that accept any non-empty text


def test_every_variable_name_is_unique_and_shaped_like_one() -> None:
    names = [variable for declared in DECLARED for variable in declared.variables]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", name) for name in names), names


def test_variables_keep_their_names() -> None:
    """A variable is the field upper-cased unless declared otherwise; deployments set these."""
    renamed = {d.name: d.variable for d in DECLARED if d.variable != d.name.upper()}
    assert renamed == {
        "platform_fee_basis_points": "PLATFORM_FEE_BPS",
        "data_dir": "EDGEMART_DATA_DIR",
        "version": "EDGEMART_VERSION",
        "rate_limit_overrides": "RATE_LIMIT",
        "xray_daemon_address": "AWS_XRAY_DAEMON_ADDRESS",  # as Lambda names it
    }
    assert set(PARSERS) >= {f"RATE_LIMIT_{group.upper()}" for group in RATE_LIMIT_GROUPS}


@pytest.mark.parametrize("name", [n for n, v in VARIABLES.items() if v.default is not None])
def test_every_setting_parses_its_default(name: str) -> None:
    default = VARIABLES[name].default
    assert default is not None
    settings = Settings.from_env({name: default})
    if isinstance(PARSERS[name], RateLimits):
        group = name.removeprefix("RATE_LIMIT_").lower()
        assert settings.rate_limit_overrides == ((group, DEFAULT_POLICIES[group][0], WINDOW_S),)
    else:
        assert settings == Settings()


def test_a_setting_without_a_default_value_is_unset_by_default() -> None:
    unset = [d for d in DECLARED if not isinstance(d.parser, RateLimits) and d.default is None]
    assert unset, "the docs show these as unset"
    for declared in unset:
        assert VARIABLES[declared.variable].shown_default in ("unset", declared.shown_default)


def sample(parser: object, default: object) -> str:
    """A valid value for `parser` that differs from `default`."""
    if isinstance(parser, Text):
        return "sample-text"
    if isinstance(parser, FilePath):
        return "/sample/path"
    if isinstance(parser, Integer):
        low = parser.low if parser.low is not None else 0
        return str(low + 1 if default == low else low)
    if isinstance(parser, Number):
        assert isinstance(default, float)
        return str(default / 2 if default else 0.5)
    if isinstance(parser, Choice):
        return next(word for word in parser.allowed if word != default)
    if isinstance(parser, Currency):
        return "eur"
    if isinstance(parser, Networks):
        return "192.0.2.0/24"
    if isinstance(parser, Origins):
        return "https://shop.example"
    if isinstance(parser, RateLimits):
        return "7/30"
    if isinstance(parser, Intervals):
        return "refresh_views=60"
    raise AssertionError(f"no sample for {type(parser).__name__}: add one here")


@pytest.mark.parametrize("name", PARSERS)
def test_each_variable_sets_its_own_setting_and_only_it(name: str) -> None:
    (declared,) = [d for d in DECLARED if name in d.variables]
    settings = Settings.from_env({name: sample(declared.parser, declared.default)})
    changed = {d.name for d in DECLARED if getattr(settings, d.name) != d.default}
    assert changed == {declared.name}


@pytest.mark.parametrize("name", PARSERS)
def test_a_bad_value_is_an_error_naming_its_variable(name: str) -> None:
    if isinstance(PARSERS[name], FREE_TEXT):
        Settings.from_env({name: "not valid!"})
        return
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({name: "not valid!"})
    assert str(raised.value).startswith(name)


@pytest.mark.parametrize("name", [n for n, p in PARSERS.items() if isinstance(p, Integer | Number)])
def test_values_out_of_bounds_are_errors_naming_the_variable(name: str) -> None:
    parser = PARSERS[name]
    assert isinstance(parser, Integer | Number)
    low = parser.low if isinstance(parser, Integer) else 0
    too_small = [str(low - 1)] if low is not None else []
    too_large = [str(parser.high * 2 + 1)] if parser.high is not None else []
    assert too_small or too_large, "an unbounded integer: nothing to test"
    for value in too_small + too_large:
        with pytest.raises(SettingsError, match=f"^{name} must be "):
            Settings.from_env({name: value})


def test_intervals_are_names_with_positive_seconds() -> None:
    read = Settings.from_env({"SCHEDULE_INTERVALS": " refresh_views = 60, score_listings=0.5 ,"})
    assert read.schedule_intervals == (("refresh_views", 60.0), ("score_listings", 0.5))
    for bad in ("refresh_views", "=5", "refresh-views=5", "x=-1", "x=inf", "x=nan", "x=5s"):
        with pytest.raises(SettingsError, match="is not name=seconds"):
            Settings.from_env({"SCHEDULE_INTERVALS": bad})


def test_a_field_without_a_declaration_is_refused() -> None:
    """Settings has no second list of its settings to drift from: each field is declared with
    setting(), and a field that is not is refused when the module is imported."""

    @dataclasses.dataclass(frozen=True)
    class Drifted:
        declared: int = setting(1, Integer(), "Database", "declared")
        undeclared: int = 2

    with pytest.raises(TypeError, match="undeclared is not declared with setting"):
        declared_settings(Drifted)
    assert [d.name for d in DECLARED] == [f.name for f in dataclasses.fields(Settings)]


def test_every_concern_has_settings() -> None:
    assert {d.concern for d in DECLARED} == set(typing.get_args(Concern))


def test_the_configuration_page_is_generated_from_the_declarations() -> None:
    assert CONFIGURATION_PAGE.read_text() == settingsdocs.markdown(), (
        "docs/configuration.md is out of date; regenerate it from the repository root with "
        "`PYTHONPATH=layers/edgemart python -m edgemart.settingsdocs > docs/configuration.md`"
    )


def test_the_configuration_page_lists_every_variable_once() -> None:
    page = CONFIGURATION_PAGE.read_text()
    listed = re.findall(r"^\| `([A-Z0-9_]+)` \|", page, flags=re.MULTILINE)
    assert sorted(listed) == sorted(PARSERS)


class _TemplateLoader(yaml.SafeLoader):
    """YAML that reads CloudFormation's `!Ref X` and friends as None."""


_TemplateLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def test_template_sets_only_declared_variables_with_values_that_parse() -> None:
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=_TemplateLoader)  # noqa: S506
    environments = [template["Globals"]["Function"]["Environment"]["Variables"]] + [
        resource["Properties"]["Environment"]["Variables"]
        for resource in template["Resources"].values()
        if "Environment" in resource.get("Properties", {})
    ]
    for variables in environments:
        ours = {k: v for k, v in variables.items() if not k.startswith("POWERTOOLS_")}
        assert set(ours) <= set(PARSERS), set(ours) - set(PARSERS)
        Settings.from_env({k: v for k, v in ours.items() if isinstance(v, str)})


def test_environment_value_reads_a_setting_by_its_declaration() -> None:
    """For callers that must know whether a setting was set at all (serve's access-log rate,
    the command line's --debug from LOG_LEVEL): the declared variable, parsed and checked."""
    assert environment_value("access_log_sample_rate", {}) is UNSET
    assert environment_value("access_log_sample_rate", {"ACCESS_LOG_SAMPLE_RATE": " "}) is UNSET
    assert environment_value("access_log_sample_rate", {"ACCESS_LOG_SAMPLE_RATE": "0.5"}) == 0.5
    assert environment_value("log_level", {"LOG_LEVEL": "debug"}) == "DEBUG"
    with pytest.raises(SettingsError, match="LOG_LEVEL"):
        environment_value("log_level", {"LOG_LEVEL": "loud"})
