"""The load the chaos tests drive: a mix of home/store/product reads and purchases through
the gateway, each outcome counted under the phase (before/outage/after) it started in, and
the ledger checks every chaos run ends with."""

from __future__ import annotations

import asyncio
import io
import random
import time
import uuid
from collections import Counter
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import psycopg

Outcome = tuple[str, int, str]  # (kind, status, problem code or "stale")
DOCUMENTED_503_CODES = ("read_only_mode", "service_unavailable")
# Longer than any request may take (the pool's 5 s wait, retries, breaker probes), short
# enough that a request stuck for good fails its test with the stacks below instead of
# holding CI until its time runs out.
REQUEST_BOUND_S = 30.0
STUCK = 0  # the status counted for a request that passed REQUEST_BOUND_S


def every_task_stack() -> str:
    """Where every task of the running loop is waiting, for the report of a stuck request."""
    out = io.StringIO()
    for task in asyncio.all_tasks():
        print(f"--- {task.get_name()} {task.get_coro()!r}", file=out)
        task.print_stack(limit=40, file=out)
    return out.getvalue()


@dataclass(frozen=True)
class ChaosCatalog:
    products: list[str]
    slugs: list[str]
    units: dict[str, int]  # stock + sold per product, conserved by every purchase
    stock: dict[str, int]
    balances_cents: int  # all wallets together

    @classmethod
    def read(cls, url: str) -> ChaosCatalog:
        with psycopg.connect(url) as conn:
            products = [
                row[0]
                for row in conn.execute(
                    "SELECT id::text FROM products WHERE is_available AND stock > 0 LIMIT 20"
                )
            ]
            slugs = [row[0] for row in conn.execute("SELECT slug FROM stores")]
            units = dict(conn.execute("SELECT id::text, stock + sold_count FROM products"))
            stock = dict(conn.execute("SELECT id::text, stock FROM products"))
            balances = conn.execute("SELECT coalesce(sum(balance_cents), 0) FROM wallets")
            ((balances_cents,),) = balances.fetchall()
        return cls(products, slugs, units, stock, int(balances_cents))


@dataclass
class MixedLoad:
    """Workers issuing requests until stopped. With `retry_purchases`, a purchase answered
    503 is retried with the same idempotency key, as a client would. While `purchasing` is
    off, the purchases' share of the mix reads product pages instead (a read-only spell)."""

    catalog: ChaosCatalog
    secret: str
    buyers: int = 20
    retry_purchases: bool = False
    phase: str = "before"
    purchasing: bool = True
    outcomes: dict[str, Counter[Outcome]] = field(default_factory=dict)
    stuck_stacks: list[str] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(1))
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def count(self, phase: str, outcome: Outcome) -> None:
        self.outcomes.setdefault(phase, Counter())[outcome] += 1

    async def worker(self, client: httpx.AsyncClient, index: int) -> None:
        subject = f"buyer-{index % self.buyers + 1}"
        token = jwt.encode({"sub": subject, "exp": int(time.time()) + 600}, self.secret)
        while not self._stop.is_set():
            started_in = self.phase  # a request belongs to the phase it started in
            kind, request = self.next_request(client, token)
            try:
                async with asyncio.timeout(REQUEST_BOUND_S):
                    response = await request
            except TimeoutError:
                self.count(started_in, (kind, STUCK, "stuck"))
                if not self.stuck_stacks:
                    self.stuck_stacks.append(every_task_stack())
                continue
            self.count(started_in, (kind, response.status_code, outcome_label(response)))
            await asyncio.sleep(0.01)

    def next_request(
        self, client: httpx.AsyncClient, token: str
    ) -> tuple[str, Coroutine[Any, Any, httpx.Response]]:
        choice = self.rng.random()
        if choice < 0.3:
            return "home", client.get("/marketplace/home")
        if choice < 0.5:
            return "store", client.get(f"/stores/{self.rng.choice(self.catalog.slugs)}")
        if choice < 0.7 or not self.purchasing:
            return "product", client.get(f"/products/{self.rng.choice(self.catalog.products)}")
        return "purchase", self.purchase(client, token)

    async def purchase(self, client: httpx.AsyncClient, token: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex}
        body = {"product_id": self.rng.choice(self.catalog.products), "quantity": 1}
        for _attempt in range(3 if self.retry_purchases else 1):
            response = await client.post("/purchases", json=body, headers=headers)
            if response.status_code != 503:
                break
            await asyncio.sleep(0.05)
        return response

    async def run(self, client: httpx.AsyncClient, workers: int = 8) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self.worker(client, i)) for i in range(workers)]

    async def stop(self, tasks: Iterable[asyncio.Task[None]]) -> None:
        self._stop.set()
        await asyncio.gather(*tasks)

    def total(self, phase: str, *, kind: str | None = None, status: int | None = None) -> int:
        return sum(
            n
            for (k, s, _), n in self.outcomes.get(phase, Counter()).items()
            if (kind is None or k == kind) and (status is None or s == status)
        )

    def with_code(self, phase: str, code: str) -> int:
        return sum(n for (_, _, c), n in self.outcomes.get(phase, Counter()).items() if c == code)

    def undocumented_5xx(self) -> list[Outcome]:
        return [
            outcome
            for counts in self.outcomes.values()
            for outcome in counts
            if outcome[1] >= 500 and not (outcome[1] == 503 and outcome[2] in DOCUMENTED_503_CODES)
        ]

    def report(self) -> dict[str, dict[str, int]]:
        return {
            phase: {f"{k} {s} {c}".strip(): n for (k, s, c), n in sorted(counts.items())}
            for phase, counts in self.outcomes.items()
        }


def outcome_label(response: httpx.Response) -> str:
    if response.status_code >= 400:
        code = response.json().get("code", "")
        return str(code)
    return "stale" if response.headers.get("x-edgemart-stale") else ""


def reported_ledger_problems(
    url: str, catalog: ChaosCatalog, load: MixedLoad, **figures: object
) -> list[str]:
    """`ledger_problems`, and a request stuck for good, after printing them with the run's
    outcomes and `figures` (what a chaos run measured), for the test log."""
    problems = ledger_problems(url, catalog)
    if load.stuck_stacks:
        problems.append(f"requests stuck past {REQUEST_BOUND_S:.0f} s (stacks printed)")
        print("".join(load.stuck_stacks))
    print({"outcomes": load.report(), **figures, "ledger_problems": problems})
    return problems


def ledger_problems(url: str, catalog: ChaosCatalog) -> list[str]:
    """Every invariant of the purchase issue that does not hold, described (empty: all hold)."""
    problems = []
    with psycopg.connect(url) as conn:

        def one(sql: str) -> object:
            row = conn.execute(sql).fetchone()
            return row[0] if row else None

        units = dict(conn.execute("SELECT id::text, stock + sold_count FROM products"))
        if units != catalog.units:
            problems.append("stock + sold changed for some product")
        stock = dict(conn.execute("SELECT id::text, stock FROM products"))
        ordered = dict(
            conn.execute(
                "SELECT product_id::text, sum(quantity) FROM orders "
                "WHERE status = 'completed' GROUP BY product_id"
            )
        )
        if any(catalog.stock[p] - stock[p] != ordered.get(p, 0) for p in stock):
            problems.append("stock taken != units in completed orders")
        debited = catalog.balances_cents - int(
            one("SELECT coalesce(sum(balance_cents), 0) FROM wallets")  # type: ignore[call-overload]
        )
        if debited != one(
            "SELECT coalesce(sum(total_cents), 0) FROM orders WHERE status = 'completed'"
        ):
            problems.append("wallet debits != completed order totals")
        checks = {
            "order total != payout + fee": "SELECT count(*) FROM orders o JOIN payouts p "
            "ON p.order_id = o.id WHERE o.total_cents <> p.amount_cents + p.fee_cents",
            "payout store != its order's store": "SELECT count(*) FROM orders o JOIN payouts p "
            "ON p.order_id = o.id WHERE p.store_id <> o.store_id",
            "completed order without payout": "SELECT count(*) FROM orders o LEFT JOIN "
            "payouts p ON p.order_id = o.id WHERE o.status = 'completed' AND p.id IS NULL",
            "two orders under one idempotency key": "SELECT count(*) FROM (SELECT 1 FROM "
            "orders GROUP BY user_sub, idempotency_key HAVING count(*) > 1) dup",
        }
        for problem, sql in checks.items():
            if one(sql) != 0:
                problems.append(problem)
    return problems
