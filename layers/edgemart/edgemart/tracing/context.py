"""Whether a call is part of a live trace: the one test every hook makes before it opens a
span."""

from __future__ import annotations

from opentelemetry import trace


def in_a_live_trace() -> bool:
    """True when the current span is recording: a request or job run being traced. False
    outside any trace, in an unsampled one (Lambda's `Sampled=0`), and under a span that has
    ended, as a pool's background task still holding the context of the request that opened
    the pool is: its later work belongs to no request."""
    return trace.get_current_span().is_recording()
