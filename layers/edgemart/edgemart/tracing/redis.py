"""A span per Redis command: subclasses of the clients, built by the process's client wrappers
(`LazyRedis`, the Upstash rate limiter) when tracing is on.

Every command of redis-py's asyncio client goes through `execute_command`, and a pipeline
through its `execute` (one span for the batch); the Upstash client sends each command through
`execute`. Only the command's name is recorded, never its keys or arguments (search counts
hold what users typed). Commands outside a live trace make no span.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind, Tracer

from edgemart.tracing.context import in_a_live_trace

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline
    from upstash_redis.asyncio import Redis as UpstashRedis


def command_attributes(command: str, connection_kwargs: dict[str, Any]) -> dict[str, Any]:
    return {
        "db.system.name": "redis",
        "db.namespace": str(connection_kwargs.get("db", 0)),
        "db.operation.name": command,
        "server.address": str(
            connection_kwargs.get("host") or connection_kwargs.get("path") or "localhost"
        ),
    }


def command_name(args: tuple[Any, ...]) -> str:
    name = args[0] if args else "?"
    return (name.decode() if isinstance(name, bytes) else str(name)).upper()


def traced_redis_class(tracer: Tracer) -> type[Redis]:
    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline

    class TracedPipeline(Pipeline):
        async def execute(self, raise_on_error: bool = True) -> list[Any]:
            if not in_a_live_trace():
                return await super().execute(raise_on_error)
            attributes = command_attributes("PIPELINE", self.connection_pool.connection_kwargs)
            attributes["db.operation.batch.size"] = len(self.command_stack)
            with tracer.start_as_current_span("PIPELINE", kind=SpanKind.CLIENT) as span:
                span.set_attributes(attributes)
                return await super().execute(raise_on_error)

    class TracedRedis(Redis):
        async def execute_command(self, *args: Any, **options: Any) -> Any:
            if not in_a_live_trace():
                return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
            name = command_name(args)
            attributes = command_attributes(name, self.connection_pool.connection_kwargs)
            with tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes):
                return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]

        def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
            return TracedPipeline(
                self.connection_pool, self.response_callbacks, transaction, shard_hint
            )

    return TracedRedis


def traced_upstash_class(tracer: Tracer) -> type[UpstashRedis]:
    from upstash_redis.asyncio import Redis as UpstashRedis

    class TracedUpstash(UpstashRedis):
        async def execute(self, command: list[Any]) -> Any:
            if not in_a_live_trace():
                return await super().execute(command)
            name = command_name(tuple(command))
            attributes = {
                "db.system.name": "redis",
                "db.namespace": "upstash",
                "db.operation.name": name,
                "server.address": self._url.split("://", 1)[-1].split("/", 1)[0],
            }
            with tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes):
                return await super().execute(command)

    return TracedUpstash
