"""The server's own view of a run: its `request_latency` histogram per route group (from a
request's arrival in the app to its response's end), read from `/metrics` before and after
the run. Beside wrk's latency it says which routes were slow, and whether the time went in
the app or before it (a request waiting for the event loop or a CPU is not in it)."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from bench.serving import Server

OWN_GROUP = "gateway"
"""The group of the gateway's own routes: the scrapes themselves; left out."""
SNAPSHOT_WAIT_S = 1.5
"""Every worker writes its totals each second (gateway.workermetrics): wait that long after a
run before reading them."""
_BUCKET = re.compile(
    r'^edgemart_request_latency_seconds_bucket\{le="([^"]+)",route_group="([^"]+)"\} (\S+)$',
    re.M,
)
_TOTAL = re.compile(
    r'^edgemart_request_latency_seconds_(count|sum)\{route_group="([^"]+)"\} (\S+)$', re.M
)


@dataclass(frozen=True)
class GroupLatency:
    """One route group's requests over a span: how many, their summed time, and how many
    took at most each bucket's bound (ms; cumulative)."""

    count: int
    sum_ms: float
    at_most: Mapping[float, int]

    def minus(self, earlier: GroupLatency) -> GroupLatency:
        return GroupLatency(
            self.count - earlier.count,
            self.sum_ms - earlier.sum_ms,
            {bound: value - earlier.at_most.get(bound, 0) for bound, value in self.at_most.items()},
        )

    @property
    def mean_ms(self) -> float:
        return self.sum_ms / self.count if self.count else 0.0

    def share_over(self, bound_ms: float) -> float:
        """The share of the requests that took longer than `bound_ms` (a bucket's bound)."""
        if not self.count:
            return 0.0
        return 1 - self.at_most[bound_ms] / self.count


def parse(text: str) -> dict[str, GroupLatency]:
    """The `request_latency` histogram of a `/metrics` page, per route group."""
    at_most: dict[str, dict[float, int]] = {}
    for bound, group, value in _BUCKET.findall(text):
        if bound != "+Inf":
            at_most.setdefault(group, {})[float(bound) * 1000] = round(float(value))
    totals: dict[str, dict[str, float]] = {}
    for kind, group, value in _TOTAL.findall(text):
        totals.setdefault(group, {})[kind] = float(value)
    return {
        group: GroupLatency(
            round(totals[group].get("count", 0)),
            totals[group].get("sum", 0.0) * 1000,
            at_most.get(group, {}),
        )
        for group in totals
    }


def scrape(server: Server) -> dict[str, GroupLatency]:
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as reply:
        return parse(reply.read().decode())


def settled_scrape(server: Server) -> dict[str, GroupLatency]:
    """`scrape` once every worker has written what it recorded until now."""
    time.sleep(SNAPSHOT_WAIT_S)
    return scrape(server)


def between(
    before: Mapping[str, GroupLatency], after: Mapping[str, GroupLatency]
) -> dict[str, GroupLatency]:
    """Each route group's requests between two scrapes (groups with none, and the scrapes'
    own, left out)."""
    empty = GroupLatency(0, 0.0, {})
    spans = {group: latency.minus(before.get(group, empty)) for group, latency in after.items()}
    return {group: span for group, span in spans.items() if span.count > 0 and group != OWN_GROUP}
