"""The `edgemart` command: serve, migrate, seed, token, edge-vcl.

Without DATABASE_URL, serve, migrate and seed use the embedded PostgreSQL in the data folder
(EDGEMART_DATA_DIR or --data-dir, default .edgemart-data); token signs with JWT_SECRET or that
folder's development secret.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import ipaddress
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from edgemart import __version__
from edgemart.errors import EdgemartError
from edgemart.settings import IPNetwork, Settings, SettingsError, environment_value

GATEWAY_EXTRA = "pip install 'edgemart[gateway]'"
# Top-level modules only the `gateway` extra installs.
GATEWAY_EXTRA_MODULES = frozenset(
    {
        "uvicorn",
        "pgserver",
        "boto3",
        "onnxruntime",
        "numpy",
        "httptools",
        "uvloop",
        "prometheus_client",
    }
)
EXIT_FAILED = 1  # the command could not do its work
EXIT_USAGE = 2  # the command line or the configuration is wrong (argparse uses 2 too)
TENANCY_VARIABLE = "TENANCY"  # single (one marketplace) or multi (the host names the tenant)


class DatabaseNotReadyError(EdgemartError):
    """The database cannot be reached, or lacks the schema the command needs."""


class MissingExtraError(EdgemartError):
    """A command needs a package from an extra that is not installed."""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result: int = args.run(args)
        return result
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        if _debugging(args):
            traceback.print_exc()
        message, code = _explain(exc, args.command)
        print("edgemart: " + " ".join(message.split()), file=sys.stderr)
        return code


def _explain(exc: Exception, command: str) -> tuple[str, int]:
    """One line in edgemart's words, and the exit code, for any error a command raises."""
    if isinstance(exc, SettingsError):
        return str(exc), EXIT_USAGE
    if isinstance(exc, EdgemartError):
        return str(exc), EXIT_FAILED
    if isinstance(exc, ModuleNotFoundError) and _top_module(exc.name) in GATEWAY_EXTRA_MODULES:
        return _missing_extra_message(_top_module(exc.name), command), EXIT_FAILED
    if isinstance(exc, psycopg.Error):
        state = f" (SQLSTATE {exc.sqlstate})" if exc.sqlstate else ""
        return (
            f"`edgemart {command}` failed on a database error{state}; "
            "run it again with --debug to see the details",
            EXIT_FAILED,
        )
    return (
        f"`edgemart {command}` failed unexpectedly ({type(exc).__name__}); "
        "run it again with --debug to see the traceback",
        EXIT_FAILED,
    )


def _top_module(name: str | None) -> str:
    return (name or "").partition(".")[0]


def _missing_extra_message(module: str, command: str) -> str:
    return (
        f"`edgemart {command}` needs {module}, which is not installed: "
        f"install the gateway extra ({GATEWAY_EXTRA})"
    )


def _debugging(args: argparse.Namespace) -> bool:
    if getattr(args, "debug", False):
        return True
    try:
        return environment_value("log_level", os.environ) == "DEBUG"
    except SettingsError:  # reported as the command's own error
        return False


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgemart",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edgemart {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", help="print the traceback of an unexpected error"
    )
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument(
        "--data-dir",
        type=Path,
        help="data folder of the embedded database and development secret "
        "(default EDGEMART_DATA_DIR, else .edgemart-data)",
    )

    def command(
        name: str, run: Callable[[argparse.Namespace], int], *, help: str, description: str
    ) -> argparse.ArgumentParser:
        """Subcommand `name`, carried out by `run`, with --debug and --data-dir."""
        sub = commands.add_parser(name, parents=[common, data], help=help, description=description)
        sub.set_defaults(run=run)
        return sub

    serve = command(
        "serve",
        _serve,
        help="run the gateway (embedded PostgreSQL when DATABASE_URL is unset)",
        description="Run every HTTP function as one ASGI app. With no DATABASE_URL an "
        "embedded PostgreSQL starts in the data folder. The database is migrated and, "
        "when empty, loaded with the demo catalog. Every request is logged unless "
        "ACCESS_LOG_SAMPLE_RATE is set.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s)")
    serve.add_argument("--port", type=int, default=8000, help="port (default %(default)s)")
    serve.add_argument("--no-demo", action="store_true", help="do not load the demo catalog")
    serve.add_argument(
        "--demo-products",
        type=_positive,
        default=5000,
        help="products in the demo catalog (default %(default)s)",
    )
    serve.add_argument(
        "--demo-tenants",
        type=_positive,
        metavar="N",
        help="serve several marketplaces (implies TENANCY=multi): make tenants demo-1..demo-N "
        "on http://demo-1.localhost:PORT/ ... (*.localhost is this machine), each with a small "
        "demo catalog of its own; kept across restarts",
    )
    serve.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="worker processes serving requests (default %(default)s); the database is "
        "prepared once before they start; the scheduled jobs run in one process of all those "
        "on the database",
    )

    command(
        "migrate",
        _migrate,
        help="apply pending schema migrations (MIGRATION_DATABASE_URL, else DATABASE_URL, "
        "else the embedded database)",
        description="Apply pending migrations in order, as the role that owns the schema "
        "(MIGRATION_DATABASE_URL, else DATABASE_URL); safe to run twice or concurrently. "
        "With neither, migrates the embedded database of the data folder (started for the "
        "command when no `edgemart serve` runs on it).",
    )

    seed = command(
        "seed",
        _seed,
        help="load a deterministic demo catalog (MIGRATION_DATABASE_URL, else DATABASE_URL, "
        "else the embedded database)",
        description="Generate a deterministic catalog and bulk-load it with COPY into a "
        "migrated database, as the role that owns the schema: MIGRATION_DATABASE_URL, else "
        "DATABASE_URL, else the embedded database of the data folder.",
    )
    seed.add_argument(
        "--products", type=_positive, default=5000, help="products (default %(default)s)"
    )
    seed.add_argument("--stores", type=_positive, help="stores (default max(50, products / 100))")
    seed.add_argument(
        "--buyers",
        type=_positive,
        default=100,
        help="funded wallets buyer-1..buyer-N (default %(default)s)",
    )
    seed.add_argument("--seed", type=int, default=1, help="random seed (default %(default)s)")
    seed.add_argument(
        "--as-of",
        type=_utc_date,
        help="date (YYYY-MM-DD) the catalog's timestamps lead up to (default today)",
    )
    seed.add_argument(
        "--replace", action="store_true", help="empty the catalog, wallets and orders first"
    )

    token = command(
        "token",
        _token,
        help="mint a development HS256 JWT",
        description="Sign a token with JWT_SECRET, else with the development secret "
        "`edgemart serve` keeps in its data folder. Never creates a secret.",
    )
    token.add_argument("--sub", required=True, help="subject (the user)")
    token.add_argument("--role", action="append", default=[], help="role claim; repeatable")
    token.add_argument("--ttl", type=_positive, default=3600, help="seconds (default %(default)s)")

    edge = commands.add_parser(
        "edge-vcl",
        parents=[common],
        help="print the Varnish configuration of the local edge (from the cache rules)",
        description="Print VCL for Debian's varnish that caches the gateway as CloudFront "
        "does in AWS: e.g. `edgemart edge-vcl > edge.vcl && varnishd -F -a :8080 -f "
        "$PWD/edge.vcl`.",
    )
    edge.add_argument(
        "--backend",
        type=_host_port,
        default="127.0.0.1:8000",
        help="the gateway's host:port (default %(default)s)",
    )
    edge.add_argument(
        "--purger",
        type=_network,
        action="append",
        default=[],
        metavar="ADDRESS",
        help="an address or network (CIDR) that may BAN and PURGE besides loopback, such as "
        "the gateway's when it runs on another host (EDGE_PURGE=varnish); repeatable",
    )
    edge.set_defaults(run=_edge_vcl)
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a positive integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def _utc_date(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise argparse.ArgumentTypeError("expected YYYY-MM-DD") from None


def _host_port(text: str) -> str:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"must be host:port, not {text!r}")
    return text


def _network(text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an IP address or network, not {text!r}"
        ) from None


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    if getattr(args, "data_dir", None) is not None:
        settings = dataclasses.replace(settings, data_dir=args.data_dir)
    return settings


def _require_modules(command: str, *modules: str) -> None:
    """Checked before any work, so a missing extra is reported before a database starts."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(_missing_extra_message(module, command))


def _serve(args: argparse.Namespace) -> int:
    if args.demo_tenants:
        _multi_tenancy_for_demo_tenants(os.environ)
    settings = _settings(args)
    embedded = ("pgserver",) if settings.database_url is None else ()
    _require_modules("serve", "uvicorn", "prometheus_client", *embedded)
    from gateway.serve import serve, serve_settings

    serve(
        args.host,
        args.port,
        demo=not args.no_demo,
        demo_products=args.demo_products,
        demo_tenants=args.demo_tenants or 0,
        settings=serve_settings(settings, os.environ),
        workers=args.workers,
    )
    return 0


def _multi_tenancy_for_demo_tenants(environ: MutableMapping[str, str]) -> None:
    """Demo tenants are told apart by their host: TENANCY=multi, set where the settings (of
    serve and of every worker it starts) are read from, unless it already says otherwise."""
    tenancy = environ.get(TENANCY_VARIABLE, "").strip().lower()
    if tenancy not in ("", "multi"):
        raise SettingsError(
            f"--demo-tenants serves several marketplaces, which needs {TENANCY_VARIABLE}=multi; "
            f"{TENANCY_VARIABLE} is {environ[TENANCY_VARIABLE]!r}"
        )
    environ[TENANCY_VARIABLE] = "multi"


def _migrate(args: argparse.Namespace) -> int:
    from edgemart.migrate import apply_migrations

    with _reachable_database(args) as url:
        run = apply_migrations(url)
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in run.migrations) or "nothing to do"
    print(f"migrations applied: {names}")
    print(f"definitions applied: {', '.join(d.name for d in run.definitions) or 'nothing to do'}")
    return 0


def _seed(args: argparse.Namespace) -> int:
    from gateway.democatalog import seed_catalog
    from gateway.progress import ProgressReporter

    with _reachable_database(args) as url:
        _check_migrated(url)
        report = seed_catalog(
            url,
            products=args.products,
            stores=args.stores,
            buyers=args.buyers,
            seed=args.seed,
            as_of=args.as_of,
            replace=args.replace,
            progress=ProgressReporter(sys.stdout, "products"),
        )
    print(
        f"seeded {report.categories} categories, {report.stores} stores, "
        f"{report.products} products, {report.buyers} buyers in {report.seconds:.1f} s"
    )
    return 0


@contextmanager
def _reachable_database(args: argparse.Namespace) -> Iterator[str]:
    """The URL of the schema's owner (MIGRATION_DATABASE_URL, else DATABASE_URL), else of the
    data folder's embedded database (started for the command when no `edgemart serve` runs on
    it), once it answers: migrating and seeding are the owner's work."""
    from gateway.embedded import database_url_for

    settings = _settings(args)
    with database_url_for(settings.owner_database_url, settings.data_dir, create=False) as url:
        _check_reachable(url)
        yield url


def _check_reachable(url: str) -> None:
    try:
        psycopg.connect(url, connect_timeout=10).close()
    except psycopg.ProgrammingError:
        raise DatabaseNotReadyError("DATABASE_URL is not a valid PostgreSQL URL") from None
    except psycopg.OperationalError:
        raise DatabaseNotReadyError(
            f"cannot connect to the database {_describe(url)}: is the server running, and "
            "does DATABASE_URL (or MIGRATION_DATABASE_URL) name it?"
        ) from None


def _describe(url: str) -> str:
    """Where `url` points, without its password."""
    parts = conninfo_to_dict(url)
    host = str(parts.get("host") or "the local socket")
    port = str(parts.get("port") or "5432")
    return f"{parts.get('dbname') or '(default)'} on {host}:{port}"


def _check_migrated(url: str) -> None:
    from edgemart.migrate import load_migrations, pending_migrations

    pending = pending_migrations(url)
    if pending:
        raise DatabaseNotReadyError(
            f"the database {_describe(url)} is not migrated ({len(pending)} of "
            f"{len(load_migrations())} migrations pending): run `edgemart migrate` first"
        )


def _edge_vcl(args: argparse.Namespace) -> int:
    from gateway.edge import render_vcl

    host, _, port = args.backend.rpartition(":")
    print(render_vcl(host, int(port), purgers=args.purger), end="")
    return 0


def _token(args: argparse.Namespace) -> int:
    import jwt

    settings = _settings(args)
    secret = _token_secret(settings)
    now = int(time.time())
    claims: dict[str, object] = {"sub": args.sub, "iat": now, "exp": now + args.ttl}
    if args.role:
        claims["roles"] = args.role
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    print(jwt.encode(claims, secret, algorithm="HS256"))
    return 0


def _token_secret(settings: Settings) -> str:
    """JWT_SECRET, else the secret `serve` created in the data folder; never a new one, which
    no server would accept."""
    from gateway.embedded import existing_development_jwt_secret, jwt_secret_path

    if settings.jwt_secret:
        return settings.jwt_secret
    if settings.jwt_jwks_url:
        raise EdgemartError(
            "JWT_JWKS_URL is set and JWT_SECRET is not: the server checks tokens against "
            "that key set, which `edgemart token` cannot sign for"
        )
    secret = existing_development_jwt_secret(settings.data_dir)
    if secret is None:
        looked_at = jwt_secret_path(settings.data_dir.resolve())
        raise EdgemartError(
            f"no JWT secret: JWT_SECRET is not set and {looked_at} "
            "does not exist; set EDGEMART_DATA_DIR (or --data-dir) to the data folder of the "
            "`edgemart serve` the token is for, or set JWT_SECRET as that server has it"
        )
    return secret


if __name__ == "__main__":
    sys.exit(main())
