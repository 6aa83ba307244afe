"""What a contender gives the benchmark: one Lambda handler per route, and the stub database
its purchase route calls."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bench.lambda_overhead.stub import PurchaseDatabase

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


@dataclass(frozen=True)
class Contender:
    handlers: Mapping[str, Handler]
    """By route (`invocations.ROUTES`): the function's handler, as Lambda would call it."""
    database: PurchaseDatabase
