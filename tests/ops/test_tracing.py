"""One trace from the HTTP request to the commit, across the retry ladder, recorded by the
OpenTelemetry SDK's in-memory exporter; the gateway and the consumer on the real broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractConnection
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers import Consumer, Message
from consumers.runner import run
from gateway.app import create_app
from gateway.settings import GatewaySettings
from hareway.tracing import Tracing
from tests.conftest import Names
from tests.consumers.support import cleanup, retry_topology, settings_for, store_at, write_topology
from tests.support.processes import eventually
from tests.support.receiver import Plan, Received, Receiver, new_secret, serving

pytestmark = [pytest.mark.broker]

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
async def ladder(names: Names, amqp: AbstractConnection, tmp_path: Path) -> AsyncIterator[Path]:
    document = retry_topology(names)
    yield write_topology(tmp_path / "topology.yaml", document)
    await cleanup(amqp, document)


@pytest.mark.timeout(60)
async def test_one_trace_from_the_http_request_to_the_commit_across_a_retry(
    rabbitmq_url: str, sqlite_url: str, ladder: Path, names: Names
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider)

    app = Consumer()

    @app.handler(names.queue)
    async def flaky(message: Message, tx: AsyncConnection) -> None:
        if message.attempts < 2:
            raise RuntimeError("not yet")

    stop, started = asyncio.Event(), asyncio.Event()
    settings = settings_for(rabbitmq_url, sqlite_url, ladder)
    consumer = asyncio.create_task(
        run(settings, [names.queue], app, stop=stop, started=started, tracing=tracing)
    )
    await asyncio.wait_for(started.wait(), 30)
    gateway = create_app(
        GatewaySettings(
            rabbitmq_url=rabbitmq_url,
            database_url=sqlite_url,
            topology_file=str(ladder),
            _env_file=None,
        ),
        tracing=tracing,
    )
    try:
        async with (
            gateway.router.lifespan_context(gateway),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=gateway), base_url="http://gateway"
            ) as client,
            store_at(sqlite_url) as store,
        ):
            posted = await client.post(
                f"/v1/exchanges/{names.exchange}/messages",
                json={"routing_key": "order.created", "payload": {"order_id": 7}},
                headers={"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"},
            )
            assert posted.status_code == 202, posted.text

            async def stored() -> bool:
                return await store.count(names.queue) == 1

            await eventually(stored, 30, "the message to be stored on its second attempt")
    finally:
        stop.set()
        await asyncio.wait_for(consumer, 30)

    spans = exporter.get_finished_spans()
    assert spans, "no span was recorded"
    trace = [span for span in spans if format(span.context.trace_id, "032x") == TRACE_ID]
    assert len(trace) == len(spans), "every span belongs to the caller's trace"
    by_id = {span.context.span_id: span for span in trace}

    def parent_of(span: ReadableSpan) -> ReadableSpan | None:
        return by_id.get(span.parent.span_id) if span.parent is not None else None

    [server] = [span for span in trace if span.kind is SpanKind.SERVER]
    assert server.parent is not None
    assert format(server.parent.span_id, "016x") == CALLER_SPAN
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 202
    attempts = [span for span in trace if span.name == f"{names.queue} process"]
    assert len(attempts) == 2, [span.name for span in trace]
    first, second = sorted(attempts, key=lambda span: span.start_time or 0)
    assert parent_of(first) is server, "the consumer continues the HTTP request's trace"
    assert parent_of(second) is first, "the retry continues the failed attempt"
    for attempt in (first, second):
        children = {span.name for span in trace if parent_of(span) is attempt}
        assert {f"{names.queue} decode", f"{names.queue} handler"} <= children
    [commit] = [span for span in trace if span.name == f"{names.queue} commit"]
    assert parent_of(commit) is second, "the commit ends the second attempt"
    [failed_handler] = [
        span for span in trace if span.name.endswith("handler") and parent_of(span) is first
    ]
    assert any(event.name == "exception" for event in failed_handler.events)


def test_tracing_is_off_unless_configured() -> None:
    assert not Tracing.from_environment("x", {}).enabled
    assert not Tracing.from_environment("x", {"OTEL_TRACES_EXPORTER": "none"}).enabled
    on = Tracing.from_environment("x", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"})
    assert on.enabled
    on.shutdown()


@pytest.mark.timeout(60)
async def test_each_push_is_a_client_span_whose_context_the_target_receives(
    rabbitmq_url: str, sqlite_url: str, names: Names, amqp: AbstractConnection, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    secret = new_secret()

    def fails_first(request: Received) -> Plan:
        return Plan(status=503) if request.headers["hareway-attempt"] == "1" else Plan()

    receiver = Receiver([secret], plan_for=fails_first)
    document = retry_topology(names)
    try:
        async with serving(receiver):
            document["subscriptions"] = [
                {"queue": names.queue, "url": receiver.url, "secret_env": "TRACED_PUSH_SECRET"}
            ]
            topology = write_topology(tmp_path / "topology.yaml", document)
            stop, started = asyncio.Event(), asyncio.Event()
            settings = settings_for(rabbitmq_url, sqlite_url, topology)
            with pytest.MonkeyPatch.context() as env:
                env.setenv("TRACED_PUSH_SECRET", secret)
                consumer = asyncio.create_task(
                    run(
                        settings,
                        [names.queue],
                        stop=stop,
                        started=started,
                        tracing=Tracing(provider),
                    )
                )
                try:
                    await asyncio.wait_for(started.wait(), 30)
                    channel = await amqp.channel(publisher_confirms=True)
                    exchange = await channel.get_exchange(names.exchange)
                    message = aio_pika.Message(
                        b'{"order_id": 7}',
                        content_type="application/json",
                        message_id=f"{names.prefix}-traced",
                        headers={"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"},
                    )
                    await exchange.publish(message, routing_key="order.created", mandatory=True)
                    await channel.close()

                    async def delivered() -> bool:
                        return bool(receiver.delivered_ids())

                    await eventually(delivered, 20, "the second attempt delivered")
                finally:
                    stop.set()
                    await asyncio.wait_for(consumer, 30)
    finally:
        await cleanup(amqp, document)

    trace = [
        s for s in exporter.get_finished_spans() if format(s.context.trace_id, "032x") == TRACE_ID
    ]
    by_id = {span.context.span_id: span for span in trace}
    pushes = sorted(
        (span for span in trace if span.name == f"{names.queue} push"),
        key=lambda span: span.start_time or 0,
    )
    assert len(pushes) == 2, [span.name for span in trace]
    attempts = []
    for push, request in zip(pushes, receiver.received, strict=True):
        assert push.kind is SpanKind.CLIENT
        assert push.parent is not None
        parent = by_id[push.parent.span_id]
        assert parent.name == f"{names.queue} process", "a child of its attempt's consumer span"
        attempts.append(parent)
        # The target continues the push span, not the publisher's.
        span_id = format(push.context.span_id, "016x")
        assert request.headers["traceparent"] == f"00-{TRACE_ID}-{span_id}-01"
        assert push.attributes is not None
        assert push.attributes["url.full"] == receiver.url
    first, second = pushes
    assert first.attributes is not None
    assert second.attributes is not None
    assert first.attributes["http.response.status_code"] == 503
    assert first.attributes["hareway.attempt"] == 1
    assert first.status.status_code is StatusCode.ERROR
    assert second.attributes["http.response.status_code"] == 204
    assert second.attributes["hareway.attempt"] == 2
    assert second.status.status_code is not StatusCode.ERROR
    # The first attempt continues the publisher's context; the retry continues the first.
    assert attempts[0].parent is not None
    assert format(attempts[0].parent.span_id, "016x") == CALLER_SPAN
    assert attempts[1].parent is not None
    assert attempts[1].parent.span_id == attempts[0].context.span_id
    assert receiver.unverified == []
