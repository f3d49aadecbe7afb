"""One log format for every hareway process: the gateway, its workers, the consumers.

Every line goes through structlog's `ProcessorFormatter`, so the lines of the standard
library's loggers (uvicorn, aio-pika, our own `logging.getLogger(__name__)`) and of
structlog's look the same: a timestamp, the level, the `component` that wrote it, the
logger, the event and its fields. `LOG_FORMAT=console` (the default) is for a person at a
terminal; `LOG_FORMAT=json` makes every line one JSON object, for a log pipeline.

Configured as a `logging.config.dictConfig` dictionary, so uvicorn applies the same
configuration in each of its `--workers` processes (`dict_config`), and by `configure`
in a process that owns its logging (the consumers).
"""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import Any, Literal

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LogFormat = Literal["console", "json"]

# Libraries whose INFO lines say nothing an operator needs: alembic prints seven lines per
# start ("setup plugin ..."), aio-pika and aiormq one per channel and reconnect attempt.
# Their warnings and errors still show.
QUIET = ("alembic", "aio_pika", "aiormq", "asyncio", "httpx", "httpcore")


def _component(name: str) -> Processor:
    def add_component(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
        event.setdefault("component", name)
        return event

    return add_component


def _drop_color_message(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    # uvicorn passes its message again with terminal colour codes, as an `extra`.
    event.pop("color_message", None)
    return event


def _json_bytes(value: Any, **_: Any) -> str:
    # orjson: a log line per request must not cost what the stdlib json does.
    return orjson.dumps(value, default=str).decode()


def _shared(component: str) -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _component(component),
    ]


def formatter(component: str, log_format: LogFormat = "console") -> logging.Formatter:
    """The formatter of every handler: also what `dict_config` names by reference."""
    renderer: Processor
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_json_bytes)
        final: list[Processor] = [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        final = [structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]
    _configure_structlog(component)
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            *_shared(component),
            structlog.stdlib.ExtraAdder(),
            _drop_color_message,
        ],
        processors=final,
    )


def _configure_structlog(component: str) -> None:
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared(component),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def dict_config(component: str, level: str, log_format: LogFormat) -> dict[str, Any]:
    """The configuration for `logging.config.dictConfig`, and for uvicorn's `log_config`."""
    level = level.upper()
    loggers: dict[str, Any] = {
        # uvicorn's own loggers write through the root handler, in this format.
        name: {"handlers": [], "propagate": True, "level": level}
        for name in ("uvicorn", "uvicorn.error", "uvicorn.asgi")
    }
    # uvicorn's access log is replaced by the gateway's (ACCESS_LOG, gateway/access.py).
    loggers["uvicorn.access"] = {"handlers": [], "propagate": False, "level": "WARNING"}
    for name in QUIET:
        loggers[name] = {"level": "WARNING"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "hareway": {
                "()": "hareway.logs.formatter",
                "component": component,
                "log_format": log_format,
            }
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "hareway",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": loggers,
    }


def configure(component: str, level: str = "INFO", log_format: LogFormat = "console") -> None:
    logging.config.dictConfig(dict_config(component, level, log_format))


def get_logger(name: str) -> Any:
    """A structlog logger: `log.info("event", key=value, ...)` becomes fields in the line."""
    return structlog.stdlib.get_logger(name)
