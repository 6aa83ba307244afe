"""CloudFront invalidations through boto3 against moto: explicit paths, one call per second
with every path queued since the last, throttling retried with back-off (the throttled
answers handed to botocore before the request is sent, as its Stubber does: moto cannot
throttle),
the distribution read from SSM, and a failure counted, never raised."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from edgemart import metrics
from edgemart.changes import listing_changed, listing_created, stock_changed
from edgemart.edgepurge import CloudFrontPurge, cloudfront_client
from tests.conftest import LogCapture

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

JITTER_S = 0.01
"""Calls are spaced when taken from the queue; botocore reaches the hook that times them a
fraction of a millisecond later, more for the first call (it builds the request afresh)."""
A = "5b17b966-2f07-43c8-86bb-e9e870ef55b1"
B = "0c6f7d4e-8a7b-4c1e-9d3f-2a1b0c9d8e7f"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from moto import mock_aws

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield


@pytest.fixture
def client(aws: None) -> Any:
    return cloudfront_client()


@pytest.fixture
def distribution(client: Any) -> str:
    created = client.create_distribution(
        DistributionConfig={
            "CallerReference": uuid.uuid4().hex,
            "Comment": "edgemart test",
            "Enabled": True,
            "Origins": {
                "Quantity": 1,
                "Items": [
                    {
                        "Id": "api",
                        "DomainName": "api.example.com",
                        "CustomOriginConfig": {
                            "HTTPPort": 80,
                            "HTTPSPort": 443,
                            "OriginProtocolPolicy": "https-only",
                        },
                    }
                ],
            },
            "DefaultCacheBehavior": {
                "TargetOriginId": "api",
                "ViewerProtocolPolicy": "redirect-to-https",
                "CachePolicyId": "4135ea2d-6df8-44a3-9df3-4b5a84be39ad",
            },
        }
    )
    distribution_id: str = created["Distribution"]["Id"]
    return distribution_id


class Calls:
    """When each CreateInvalidation was made, and the request it sent (observed with
    botocore's own events, nothing replaced). Made before any `Throttling`, so it sees the
    calls that answers too (the first handlers registered run first)."""

    def __init__(self, client: Any) -> None:
        self.at: list[float] = []
        self.bodies: list[bytes] = []
        self._lock = threading.Lock()
        client.meta.events.register_first("before-call.cloudfront.CreateInvalidation", self._called)

    def _called(self, params: dict[str, Any], **_: Any) -> None:
        with self._lock:
            self.at.append(time.monotonic())
            self.bodies.append(bytes(params["body"]))

    def references(self) -> list[str]:
        found = [re.search(rb"<CallerReference>(.*?)</", body) for body in self.bodies]
        return [match[1].decode() for match in found if match is not None]


class Throttling:
    """CloudFront's answer to the first `times` CreateInvalidation calls: 400 Throttling,
    handed to botocore before the request is sent (moto cannot throttle; the way botocore's
    own Stubber answers), so moto never sees those calls."""

    def __init__(self, client: Any, times: int) -> None:
        self.left = times
        client.meta.events.register_first("before-call.cloudfront.CreateInvalidation", self._answer)

    def _answer(self, **_: Any) -> tuple[Any, dict[str, Any]] | None:
        from botocore.awsrequest import AWSResponse

        if self.left <= 0:
            return None
        self.left -= 1
        http = AWSResponse("https://cloudfront.amazonaws.com/", 400, {}, None)
        return http, {
            "Error": {"Type": "Sender", "Code": "Throttling", "Message": "Rate exceeded"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        }


def invalidated(client: Any, distribution: str) -> list[list[str]]:
    """The paths of each invalidation of the distribution, oldest first."""
    listed = client.list_invalidations(DistributionId=distribution)["InvalidationList"]
    batches = []
    for item in listed.get("Items", []):
        found = client.get_invalidation(DistributionId=distribution, Id=item["Id"])
        batches.append(found["Invalidation"]["InvalidationBatch"]["Paths"]["Items"])
    return sorted(batches, key=lambda paths: paths[0])


def count(result: str) -> float:
    return metrics.count(metrics.EDGE_PURGES, backend="cloudfront", result=result)


def test_paths_are_explicit_and_batched_once_per_second(client: Any, distribution: str) -> None:
    calls = Calls(client)
    purge = CloudFrontPurge(distribution_id=distribution, client=client)
    ok = count("ok")

    purge.purge(stock_changed([A]))
    assert purge.flush()  # the first call goes at once
    purge.purge(stock_changed([B]))
    purge.purge(listing_created("shop"))
    purge.purge(stock_changed([B]))  # again: once in the batch
    purge.close()  # what waited for its second goes before the thread stops

    assert len(calls.at) == 2
    assert calls.at[1] - calls.at[0] >= 1.0 - JITTER_S
    assert sorted(invalidated(client, distribution)) == sorted(
        [[f"/products/{A}"], [f"/products/{B}", "/stores/shop*", "/marketplace/search*"]]
    )
    assert len(set(calls.references())) == 2
    assert count("ok") == ok + 2


def test_a_batch_not_yet_due_does_not_hold_the_end_of_an_invocation(
    client: Any, distribution: str
) -> None:
    """flush (the end of a Lambda invocation) waits for calls under way and for what may go
    now, not for a batch's second: that batch goes with a later invocation, or at close."""
    calls = Calls(client)
    purge = CloudFrontPurge(distribution_id=distribution, client=client, every_s=30)
    purge.purge(stock_changed([A]))
    assert purge.flush()
    purge.purge(listing_changed(B, "shop"))
    assert purge.flush(timeout_s=5)
    assert len(calls.at) == 1  # the second batch waits for its turn, 30 s after the first
    assert len(invalidated(client, distribution)) == 1


def test_throttling_is_retried_with_back_off_and_the_same_reference(
    client: Any, distribution: str
) -> None:
    calls = Calls(client)
    Throttling(client, times=2)
    purge = CloudFrontPurge(distribution_id=distribution, client=client)
    throttled, ok = count("throttled"), count("ok")

    purge.purge(listing_changed(A, "shop"))
    purge.close()

    assert len(calls.at) == 3
    first, second, third = calls.at
    assert second - first >= 1.0 - JITTER_S and third - second >= 2.0 - JITTER_S  # 1 s, 2 s
    assert len(set(calls.references())) == 1  # one invalidation, tried three times
    assert invalidated(client, distribution) == [
        [f"/products/{A}", "/stores/shop*", "/marketplace/search*"]
    ]
    assert (count("throttled"), count("ok")) == (throttled + 2, ok + 1)


def test_a_retry_past_the_stock_bound_is_not_made(
    client: Any, distribution: str, captured_logs: LogCapture
) -> None:
    """Pages a purge names are expired at the edge once the stock bound has passed."""
    calls = Calls(client)
    Throttling(client, times=100)
    purge = CloudFrontPurge(distribution_id=distribution, client=client, give_up_after_s=2.5)
    throttled = count("throttled")

    purge.purge(stock_changed([A]))
    purge.close()

    assert len(calls.at) == 2  # at 0 s and 1 s; the next (3 s) would be past the bound
    assert count("throttled") == throttled + 2
    assert invalidated(client, distribution) == []
    (line,) = [line for line in captured_logs.lines() if "not invalidated" in str(line["message"])]
    assert line["level"] == "WARNING"


def test_the_distribution_is_read_from_its_parameter_once(client: Any, distribution: str) -> None:
    import boto3

    name = "/edgemart/test/cloudfront-distribution-id"
    boto3.client("ssm").put_parameter(Name=name, Value=distribution, Type="String")
    purge = CloudFrontPurge(distribution_parameter=name, client=client)
    purge.purge(stock_changed([A]))
    assert purge.flush()
    boto3.client("ssm").delete_parameter(Name=name)
    purge.purge(stock_changed([B]))
    purge.close()
    assert purge.distribution_id == distribution
    assert sorted(invalidated(client, distribution)) == sorted(
        [[f"/products/{A}"], [f"/products/{B}"]]
    )


def test_a_failure_is_counted_never_raised_and_not_retried(client: Any) -> None:
    calls = Calls(client)
    purge = CloudFrontPurge(distribution_id="EDOESNOTEXIST", client=client)
    failed = count("failed")
    purge.purge(stock_changed([A]))  # no exception here
    purge.close()  # nor here
    assert len(calls.at) == 1  # NoSuchDistribution is no reason to try again
    assert count("failed") == failed + 1


@pytest.mark.anyio
async def test_aclose_sends_what_is_queued(client: Any, distribution: str) -> None:
    purge = CloudFrontPurge(distribution_id=distribution, client=client)
    purge.purge(stock_changed([A]))
    purge.purge(stock_changed([B]))
    await purge.aclose()
    paths = sorted(path for batch in invalidated(client, distribution) for path in batch)
    assert paths == sorted([f"/products/{A}", f"/products/{B}"])
