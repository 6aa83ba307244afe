import gzip
import random
import zlib

import pytest

from edgemart.compression import MIN_COMPRESS_BYTES, accepts_gzip, gzip_body


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        ("gzip", True),
        ("gzip, deflate, br, zstd", True),
        ("br;q=1.0, gzip;q=0.8, *;q=0.1", True),
        ("x-gzip", True),
        ("GZIP", True),
        ("*", True),
        ("identity, *;q=0.5", True),
        ("gzip;q=0", False),
        ("gzip;q=0.000", False),
        ("gzip;q=0, *", False),
        ("*;q=0", False),
        ("br, deflate", False),
        ("identity", False),
        ("gzip;q=nonsense", False),
        ("gzip;q=2", False),
        ("", False),
        (None, False),
    ],
)
def test_accept_encoding(header: str | None, accepted: bool) -> None:
    assert accepts_gzip(header) is accepted


def test_bodies_under_the_threshold_are_left_alone() -> None:
    assert gzip_body(b"a" * (MIN_COMPRESS_BYTES - 1)) is None
    body = b"a" * MIN_COMPRESS_BYTES
    compressed = gzip_body(body)
    assert compressed is not None and gzip.decompress(compressed) == body


def test_a_body_that_would_not_shrink_is_left_alone() -> None:
    incompressible = random.Random(1).randbytes(4096)
    assert len(zlib.compress(incompressible, 6, wbits=31)) >= len(incompressible)
    assert gzip_body(incompressible) is None
