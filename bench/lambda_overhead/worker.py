"""One contender in a process of its own, as in its own Lambda execution environment, doing
what `run` asks over a pipe: one JSON command a line on stdin, one JSON reply a line on the
process's original stdout, after `REPLY` (py-spy, when it runs the worker, writes there too).

    python -m bench.lambda_overhead.worker <contender>

Everything else the process writes to stdout (EMF metrics, log lines: what Lambda would send to
CloudWatch Logs) goes to /dev/null, written and formatted as for real.

Commands: `check` (each route once: status, headers, body, the database call), `time` (`route`,
`invocations`: µs per invocation of that many back to back, each on a fresh copy of the event),
`loop` (`route`, `seconds`: invocations back to back for that long, for py-spy to sample),
`parts` (`number`, `repeat`: edgemart's costliest pieces measured alone, `parts`).
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from bench.lambda_overhead.contender import Contender, Handler
from bench.lambda_overhead.invocations import ROUTES, bearer_token, context, event


def build(name: str) -> Contender:
    if name == "edgemart":
        from bench.lambda_overhead import edgemart_functions

        return edgemart_functions.build()
    if name == "bare":
        from bench.lambda_overhead import bare

        return bare.build()
    from bench.lambda_overhead import powertools

    if name == "powertools":
        return powertools.build()
    if name == "powertools_correlation":
        return powertools.build(correlation_id=True)
    raise SystemExit(f"unknown contender {name!r}")


EXPECTED_STATUS = {"home": 200, "purchase": 201}
LOOP_BATCH = 200
REPLY = "@reply "
"""What starts a reply line; anything else on stdout is not the worker's."""


def invoke_all(handler: Handler, events: list[dict[str, Any]], lambda_context: Any) -> None:
    """The measured loop: nothing but the invocations."""
    for one in events:
        handler(one, lambda_context)


class Worker:
    def __init__(self, contender: Contender) -> None:
        self.contender = contender
        token = bearer_token()
        self.events = {route: event(route, token) for route in ROUTES}
        self.context = context()

    def fresh_events(self, route: str, count: int) -> list[dict[str, Any]]:
        return [copy.deepcopy(self.events[route]) for _ in range(count)]

    def check(self, command: Mapping[str, Any]) -> dict[str, Any]:
        answers: dict[str, Any] = {}
        for route in ROUTES:
            calls = self.contender.database.calls
            response = self.contender.handlers[route](self.fresh_events(route, 1)[0], self.context)
            args = list(self.contender.database.last_args)
            answers[route] = {
                "status": response["statusCode"],
                "headers": {k.lower(): v for k, v in response.get("headers", {}).items()},
                "body": response.get("body", ""),
                "base64": response.get("isBase64Encoded", False),
                "database_calls": self.contender.database.calls - calls,
                # The request id (the 9th argument) is each contender's own.
                "database_args": [repr(arg) for i, arg in enumerate(args) if i != 8],
            }
        return answers

    def time(self, command: Mapping[str, Any]) -> dict[str, Any]:
        route, count = command["route"], command["invocations"]
        handler = self.contender.handlers[route]
        events = self.fresh_events(route, count)
        started = time.perf_counter()
        invoke_all(handler, events, self.context)
        elapsed = time.perf_counter() - started
        last = handler(self.fresh_events(route, 1)[0], self.context)
        if last["statusCode"] != EXPECTED_STATUS[route]:
            raise RuntimeError(f"{route} answered {last['statusCode']}: {last.get('body')}")
        return {"us": elapsed / count * 1e6}

    def loop(self, command: Mapping[str, Any]) -> dict[str, Any]:
        route, seconds = command["route"], command["seconds"]
        handler = self.contender.handlers[route]
        invocations = 0
        ends = time.monotonic() + seconds
        while time.monotonic() < ends:
            invoke_all(handler, self.fresh_events(route, LOOP_BATCH), self.context)
            invocations += LOOP_BATCH
        return {"invocations": invocations}

    def parts(self, command: Mapping[str, Any]) -> dict[str, Any]:
        from bench.lambda_overhead.parts import measure

        return {"parts": measure(command["number"], command["repeat"])}


def main() -> None:
    # The replies keep the original stdout; the contender's own output goes to /dev/null.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    worker = Worker(build(sys.argv[1]))
    ops: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
        "check": worker.check,
        "time": worker.time,
        "loop": worker.loop,
        "parts": worker.parts,
    }
    for line in sys.stdin:
        command = json.loads(line)
        replies.write(REPLY + json.dumps(ops[command["op"]](command)) + "\n")


if __name__ == "__main__":
    main()
