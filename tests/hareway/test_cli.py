"""`hareway topology export | diff | apply` against a RabbitMQ node the test starts itself."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.rabbit_node import RabbitNode

pytestmark = pytest.mark.slow

TOPOLOGY = {
    "exchanges": [{"name": "orders", "type": "topic"}],
    "queues": [
        {
            "name": "orders.persist",
            "type": "quorum",
            "retry": {"delays": ["1s", "10s", "1m"], "max_attempts": 5},
        },
        {"name": "orders.audit", "retry": {"delays": ["500ms"], "max_attempts": 2}},
    ],
    "bindings": [
        {"exchange": "orders", "queue": "orders.persist", "routing_key": "order.#"},
        {"exchange": "orders", "queue": "orders.audit", "routing_key": "#"},
    ],
}


@pytest.fixture
def node(rabbit_node: RabbitNode) -> RabbitNode:
    return rabbit_node


async def hareway(*args: str, url: str | None = None) -> tuple[int, str]:
    command = [sys.executable, "-c", "from hareway.cli import app; app()", *args]
    if url is not None:
        command += ["--url", url]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


@pytest.mark.timeout(180)
async def test_exported_definitions_import_and_then_diff_reports_no_change(
    node: RabbitNode, tmp_path: Path
) -> None:
    topology = tmp_path / "topology.yaml"
    topology.write_text(yaml.safe_dump(TOPOLOGY))
    definitions = tmp_path / "definitions.json"

    code, output = await hareway("topology", "export", "-f", str(topology), "-o", str(definitions))
    assert code == 0, output
    assert {queue["name"] for queue in json.loads(definitions.read_text())["queues"]} >= {
        "orders.persist.retry.10s",
        "orders.persist.dlq",
        "orders.audit.retry.500ms",
    }

    code, before = await hareway("topology", "diff", "-f", str(topology), url=node.url)
    assert code == 2, before  # everything would be created
    assert "0 unchanged" in before
    assert "would create exchange 'orders'" in before  # a dry run created nothing

    await node.ctl("import_definitions", str(definitions))

    code, after = await hareway("topology", "diff", "-f", str(topology), url=node.url)
    assert code == 0, after
    assert "0 would create, 0 conflicting, 11 unchanged, 8 assumed" in after
    # The store's part, which no broker holds: each queue's retention, the defaults else.
    assert "retention    queue 'orders.persist': max_age 7d" in after
    listed = await node.ctl("list_bindings", "source_name", "destination_name", "routing_key")
    assert "orders.persist.retry\torders.persist.retry.1m\t1m" in listed

    code, applied = await hareway("topology", "apply", "-f", str(topology), url=node.url)
    assert code == 0, applied  # applying over an import changes nothing and succeeds

    # `make clean`: everything the file declared is gone again, ladders included.
    code, deleted = await hareway("topology", "delete", "-f", str(topology), url=node.url)
    assert code == 0, deleted
    assert "deleted      queue 'orders.persist.retry.10s'" in deleted
    code, gone = await hareway("topology", "diff", "-f", str(topology), url=node.url)
    assert code == 2, gone
    assert "0 unchanged" in gone
    queues = (await node.ctl("list_queues", "name")).split()
    assert not [name for name in queues if name.startswith("orders")], queues


@pytest.mark.timeout(180)
async def test_apply_refuses_a_conflicting_file_without_applying_any_of_it(
    node: RabbitNode, tmp_path: Path
) -> None:
    topology = tmp_path / "topology.yaml"
    topology.write_text(yaml.safe_dump(TOPOLOGY))
    code, output = await hareway("topology", "apply", "-f", str(topology), url=node.url)
    assert code == 0, output

    changed = yaml.safe_load(yaml.safe_dump(TOPOLOGY))
    changed["queues"][1]["type"] = "quorum"  # orders.audit exists as a classic queue
    changed["exchanges"].append({"name": "payments", "type": "topic"})
    topology.write_text(yaml.safe_dump(changed))

    code, diff = await hareway("topology", "diff", "-f", str(topology), url=node.url)
    assert code == 3, diff
    assert "conflicting  queue 'orders.audit'" in diff
    assert "would create exchange 'payments'" in diff

    code, refused = await hareway("topology", "apply", "-f", str(topology), url=node.url)
    assert code == 1
    assert "nothing applied" in refused
    exchanges = await node.ctl("list_exchanges", "name")
    assert "payments" not in exchanges.split()


async def test_a_missing_file_is_a_clear_error() -> None:
    code, output = await hareway("topology", "export", "-f", "/nonexistent/topology.yaml")
    assert code == 1
    assert "/nonexistent/topology.yaml" in output
