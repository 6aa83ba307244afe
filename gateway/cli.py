"""The `edgemart` command: serve, migrate, seed, token."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from edgemart.errors import EdgemartError
from edgemart.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result: int = args.run(args)
        return result
    except EdgemartError as exc:
        print(f"edgemart: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgemart", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the gateway (embedded PostgreSQL when DATABASE_URL is unset)",
        description="Run every HTTP function as one ASGI app. With no DATABASE_URL an "
        "embedded PostgreSQL starts in EDGEMART_DATA_DIR. The database is migrated and, "
        "when empty, loaded with the demo catalog.",
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
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser(
        "migrate",
        help="apply pending schema migrations to DATABASE_URL",
        description="Apply pending migrations in order; safe to run twice or concurrently.",
    )
    migrate.set_defaults(run=_migrate)

    seed = commands.add_parser(
        "seed",
        help="load a deterministic demo catalog into DATABASE_URL",
        description="Generate a deterministic catalog and bulk-load it with COPY.",
    )
    seed.add_argument("--products", type=_positive, default=5000, help="default %(default)s")
    seed.add_argument("--stores", type=_positive, help="default max(50, products / 100)")
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
    seed.set_defaults(run=_seed)

    token = commands.add_parser(
        "token",
        help="mint a development HS256 JWT",
        description="Sign a token with JWT_SECRET (or the development secret `serve` uses).",
    )
    token.add_argument("--sub", required=True, help="subject (the user)")
    token.add_argument("--role", action="append", default=[], help="role claim; repeatable")
    token.add_argument("--ttl", type=_positive, default=3600, help="seconds (default %(default)s)")
    token.set_defaults(run=_token)

    edge = commands.add_parser(
        "edge-vcl",
        help="print the Varnish configuration of the local edge (from the cache rules)",
        description="Print VCL for Debian's varnish that caches the gateway as CloudFront "
        "does in AWS: e.g. `edgemart edge-vcl > edge.vcl && varnishd -F -a :8080 -f "
        "$PWD/edge.vcl`.",
    )
    edge.add_argument("--backend", default="127.0.0.1:8000", help="gateway host:port")
    edge.set_defaults(run=_edge_vcl)
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def _utc_date(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise argparse.ArgumentTypeError("expected YYYY-MM-DD") from None


def _require_database_url(settings: Settings) -> str:
    if settings.database_url is None:
        raise EdgemartError("DATABASE_URL is not set")
    return settings.database_url


def _serve(args: argparse.Namespace) -> int:
    from gateway.serve import serve

    serve(args.host, args.port, demo=not args.no_demo, demo_products=args.demo_products)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from edgemart.migrate import apply_migrations

    applied = apply_migrations(_require_database_url(Settings.from_env()))
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied) or "nothing to do"
    print(f"migrations applied: {names}")
    return 0


def _seed(args: argparse.Namespace) -> int:
    from gateway.democatalog import seed_catalog

    report = seed_catalog(
        _require_database_url(Settings.from_env()),
        products=args.products,
        stores=args.stores,
        buyers=args.buyers,
        seed=args.seed,
        as_of=args.as_of,
        replace=args.replace,
    )
    print(
        f"seeded {report.categories} categories, {report.stores} stores, "
        f"{report.products} products, {report.buyers} buyers in {report.seconds:.1f} s"
    )
    return 0


def _edge_vcl(args: argparse.Namespace) -> int:
    from gateway.edge import render_vcl

    host, _, port = args.backend.rpartition(":")
    if not host or not port.isdigit():
        raise EdgemartError(f"--backend must be host:port, not {args.backend!r}")
    print(render_vcl(host, int(port)), end="")
    return 0


def _token(args: argparse.Namespace) -> int:
    import jwt

    from gateway.embedded import development_jwt_secret

    settings = Settings.from_env()
    secret = settings.jwt_secret or development_jwt_secret(settings.data_dir)
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


if __name__ == "__main__":
    sys.exit(main())
