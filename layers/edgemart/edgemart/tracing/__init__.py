"""Tracing, when `TRACING` is `xray` or `otlp` (docs/decisions/0028-tracing.md).

Nothing here is imported while tracing is off: each place that traces imports it inside the
branch that needs it, so an untraced process never loads OpenTelemetry.
"""
