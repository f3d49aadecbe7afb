"""Every configuration error, in both processes: one line naming the variable, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from yarl import URL

from tests.support.processes import inherited_env

SECRET_KEY = "sk-live-DO-NOT-PRINT-4711"
# Nothing listens on port 1: a process that got past its settings would say "no broker".
NO_BROKER = "amqp://guest:guest@127.0.0.1:1/"

# (variable, value, what the one line must say), for both processes
BOTH = [
    ("DATABASE_URL", "notaurl", "DATABASE_URL: 'notaurl' is not a database URL"),
    ("DATABASE_URL", "mysql://u@h/db", "DATABASE_URL: driver 'mysql' is not supported"),
    ("RABBITMQ_URL", "notaurl", "RABBITMQ_URL: 'notaurl' is not an amqp:// or amqps:// URL"),
    ("RABBITMQ_URL", "amqp:///", "RABBITMQ_URL: 'amqp:///' names no host"),
    ("TOPOLOGY_FILE", "/nonexistent/topology.yaml", "TOPOLOGY_FILE: cannot read topology file"),
    ("LOG_FORMAT", "xml", "LOG_FORMAT: Input should be 'console' or 'json'"),
    ("OTEL_TRACES_EXPORTER", "zipkin", "OTEL_TRACES_EXPORTER: 'zipkin' is not supported"),
]
GATEWAY = [
    ("PUBLISH_TIMEOUT_S", "soon", "PUBLISH_TIMEOUT_S: Input should be a valid number"),
    ("API_KEYS", "not json", "API_KEYS: not valid JSON"),
    # A raw key pasted where its digest belongs: named, never printed.
    (
        "API_KEYS",
        f'[{{"name": "orders", "sha256": "{SECRET_KEY}"}}]',
        "API_KEYS[0].sha256: must be 64 hex digits",
    ),
    (
        "CORS_ALLOW_ORIGINS",
        "https://app.example.com/,http://localhost:3000",
        "CORS_ALLOW_ORIGINS: 'https://app.example.com/' is not an origin",
    ),
    ("CORS_ALLOW_ORIGINS", "*,https://a.example", "CORS_ALLOW_ORIGINS: `*` (any origin) stands"),
]
CONSUMER = [
    ("PREFETCH", "-1", "PREFETCH: Input should be greater than or equal to 1"),
    ("DRAIN_TIMEOUT_S", "forever", "DRAIN_TIMEOUT_S: Input should be a valid number"),
]


def run(module: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    args = ["--port", "1"] if module == "gateway" else ["--queue", "q"]
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env={
            **inherited_env(),
            "RABBITMQ_URL": NO_BROKER,
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/hareway.db",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_one_line(result: subprocess.CompletedProcess[str], needle: str) -> None:
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 2, output
    assert "\n" not in output, f"more than one line:\n{output}"
    assert "configuration error" in output, output
    assert needle in output, output


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("variable", "value", "needle"), BOTH + GATEWAY)
def test_the_gateway_says_one_line_and_exits_2(
    variable: str, value: str, needle: str, tmp_path: Path
) -> None:
    result = run("gateway", {variable: value}, tmp_path)
    assert_one_line(result, needle)
    assert SECRET_KEY not in result.stdout + result.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("variable", "value", "needle"), BOTH + CONSUMER)
def test_the_consumer_says_one_line_and_exits_2(
    variable: str, value: str, needle: str, tmp_path: Path
) -> None:
    assert_one_line(run("consumers", {variable: value}, tmp_path), needle)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("module", ["gateway", "consumers"])
def test_a_password_with_an_unencoded_comma_is_never_printed(module: str, tmp_path: Path) -> None:
    url = "amqp://guest:hunter,two@127.0.0.1:1/"
    result = run(module, {"RABBITMQ_URL": url}, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output  # no broker there: the how-to message
    assert "No RabbitMQ answers at amqp://guest:***@127.0.0.1:1/" in output
    assert "hunter" not in output
    assert "two@" not in output


@pytest.mark.broker
@pytest.mark.timeout(60)
@pytest.mark.parametrize("module", ["gateway", "consumers"])
@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"password": "wrong-password"}, "refused the login of user 'guest'"),
        ({"path": "/no-such-vhost"}, "refused virtual host 'no-such-vhost'"),
    ],
)
def test_a_refused_login_or_vhost_is_a_configuration_error(
    module: str, change: dict[str, str], needle: str, rabbitmq_url: str, tmp_path: Path
) -> None:
    url = URL(rabbitmq_url)
    bad = url.with_password(change["password"]) if "password" in change else url
    bad = bad.with_path(change["path"]) if "path" in change else bad
    result = run(module, {"RABBITMQ_URL": str(bad)}, tmp_path)
    assert_one_line(result, f"RABBITMQ_URL: the broker at {url.host}:{url.port}")
    assert needle in result.stderr
    assert "wrong-password" not in result.stderr


@pytest.mark.timeout(60)
def test_a_misspelt_variable_is_warned_about(tmp_path: Path) -> None:
    result = run("consumers", {"RABBIT_URL": "amqp://elsewhere/"}, tmp_path)
    assert result.returncode == 1  # it went on, to the broker RABBITMQ_URL names
    assert "RABBIT_URL is set but is no hareway setting" in result.stderr
    assert "did you mean RABBITMQ_URL?" in result.stderr
