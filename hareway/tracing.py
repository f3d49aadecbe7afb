"""OpenTelemetry tracing, off unless the environment asks for it.

On when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_TRACES_EXPORTER` is set (the SDK's own
variables; `OTEL_TRACES_EXPORTER=none` keeps it off): the gateway continues the W3C
`traceparent` of each HTTP request (or starts a trace), puts its context into the AMQP
headers of the message it publishes (`traceparent`, `tracestate`), and the consumer
continues it through decode, handler and commit, and into the message's next attempt on
the retry ladder.

Off, nothing is imported from the SDK and no span is made: the gateway only carries a
caller's `traceparent` into the message unchanged, so a trace started elsewhere still
reaches a consumer that traces.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from hareway.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# version-traceid-parentid-flags, lower-case hex (W3C Trace Context).
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_MAX_TRACESTATE = 512


def valid_traceparent(value: str) -> bool:
    return _TRACEPARENT.fullmatch(value) is not None and value[3:35] != "0" * 32


def valid_tracestate(value: str) -> bool:
    return len(value) <= _MAX_TRACESTATE and value.isascii() and value.isprintable()


class Tracing:
    """A tracer and the W3C propagator, or nothing (`enabled` False) when tracing is off."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.provider = provider
        self.enabled = provider is not None
        self.tracer: Tracer | None = None
        self._propagator: Any = None
        if provider is not None:
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )

            self.tracer = provider.get_tracer("hareway")
            self._propagator = TraceContextTextMapPropagator()

    @classmethod
    def from_environment(
        cls, service_name: str, environ: Mapping[str, str] | None = None
    ) -> Tracing:
        environ = os.environ if environ is None else environ
        exporter_name = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
        endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        )
        if exporter_name == "none" or not (exporter_name or endpoint):
            return cls()
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

        exporter: SpanExporter
        if exporter_name in ("", "otlp"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        elif exporter_name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporter = ConsoleSpanExporter(formatter=_one_line)
        else:
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER: {exporter_name!r} is not supported; "
                "use otlp (with OTEL_EXPORTER_OTLP_ENDPOINT), console or none"
            )
        name = environ.get("OTEL_SERVICE_NAME") or service_name
        provider = TracerProvider(resource=Resource.create({"service.name": name}))
        provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider)

    def extract(self, carrier: Mapping[str, Any]) -> Context | None:
        """The context a carrier's `traceparent` names (HTTP or AMQP headers), if any."""
        if self._propagator is None:
            return None
        text = {
            name: value.decode("latin-1") if isinstance(value, bytes) else value
            for name in (TRACEPARENT, TRACESTATE)
            if isinstance(value := carrier.get(name), str | bytes)
        }
        if not text:
            return None
        context: Context = self._propagator.extract(text)
        return context

    def inject(self, carrier: MutableMapping[str, Any], span: Span) -> None:
        """Put `span`'s context into `carrier` as `traceparent` (and `tracestate`)."""
        if self._propagator is None:
            return
        from opentelemetry.trace import set_span_in_context

        self._propagator.inject(carrier, context=set_span_in_context(span))

    def start(
        self,
        name: str,
        kind: str,
        parent: Context | Span | None = None,
        attributes: Mapping[str, Any] | None = None,
        start_time: int | None = None,
    ) -> Span:
        """A span, child of `parent` (a context, or a span), of `kind` ("server",
        "producer", "consumer", "internal")."""
        assert self.tracer is not None, "start() only while tracing is enabled"
        from opentelemetry.trace import SpanKind, set_span_in_context

        context = parent
        if parent is not None and not isinstance(parent, dict):
            context = set_span_in_context(parent)
        return self.tracer.start_span(
            name,
            context=context,  # type: ignore[arg-type]
            kind=SpanKind[kind.upper()],
            attributes=dict(attributes or {}),
            start_time=start_time,
        )

    def failed(self, span: Span, description: str) -> None:
        """Mark `span` as failed (status ERROR), saying why."""
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, description))

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()


def _one_line(span: Any) -> str:
    # The SDK's console exporter prints indented JSON; one line per span greps better.
    import json

    return json.dumps(json.loads(span.to_json()), separators=(",", ":")) + "\n"


OFF = Tracing()
