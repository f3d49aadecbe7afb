"""What applying a topology would change on a running broker, read over AMQP alone.

AMQP can ask whether an exchange or queue exists (a passive declare) and whether its
settings match (redeclaring an existing entity with equal settings changes nothing; with
other settings the broker refuses and changes nothing either). It cannot list bindings, so a
binding between two existing entities is reported as `assumed`: applying re-asserts it,
which is idempotent. No entity is ever created while planning.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection

from hareway.topology import (
    Topology,
    TopologyConflict,
    binding_label,
    declare_exchange,
    declare_queue,
    declare_topology,
)


class Change(enum.StrEnum):
    CREATED = "created"
    CONFLICTING = "conflicting"
    UNCHANGED = "unchanged"
    ASSUMED = "assumed"


@dataclass(frozen=True, slots=True)
class Entry:
    change: Change
    what: str
    reason: str = ""


@dataclass(slots=True)
class Plan:
    entries: list[Entry] = field(default_factory=list)

    def of(self, change: Change) -> list[Entry]:
        return [entry for entry in self.entries if entry.change is change]

    @property
    def changes(self) -> bool:
        return bool(self.of(Change.CREATED) or self.of(Change.CONFLICTING))


async def diff_topology(connection: AbstractConnection, topology: Topology) -> Plan:
    topology = topology.expanded()
    plan = Plan()
    existing: set[str] = set()
    for exchange in topology.exchanges:
        what = f"exchange {exchange.name!r}"
        entry = await _compare(
            connection,
            what,
            partial(_passive_exchange, name=exchange.name),
            partial(declare_exchange, spec=exchange),
        )
        if entry.change is not Change.CREATED:
            existing.add(what)
        plan.entries.append(entry)
    for queue in topology.queues:
        what = f"queue {queue.name!r}"
        entry = await _compare(
            connection,
            what,
            partial(_passive_queue, name=queue.name),
            partial(declare_queue, spec=queue),
        )
        if entry.change is not Change.CREATED:
            existing.add(what)
        plan.entries.append(entry)
    for binding in topology.bindings:
        ends_exist = {f"exchange {binding.exchange!r}", f"queue {binding.queue!r}"} <= existing
        change = Change.ASSUMED if ends_exist else Change.CREATED
        plan.entries.append(Entry(change, binding_label(binding)))
    return plan


async def apply_topology(connection: AbstractConnection, topology: Topology) -> Plan:
    """Declare the topology, but only if nothing conflicts: never half-applied."""
    plan = await diff_topology(connection, topology)
    conflicts = plan.of(Change.CONFLICTING)
    if conflicts:
        raise TopologyConflict(
            "nothing applied; these exist with other settings:\n"
            + "\n".join(f"  {entry.what}: {entry.reason}" for entry in conflicts)
        )
    await declare_topology(connection, topology)
    return plan


async def delete_topology(connection: AbstractConnection, topology: Topology) -> list[str]:
    """Delete every queue and exchange the topology declares (ladders expanded)."""
    topology = topology.expanded()
    done: list[str] = []
    channel = await connection.channel()
    try:
        for queue in topology.queues:
            await channel.queue_delete(queue.name)
            done.append(f"deleted      queue {queue.name!r}")
        for exchange in topology.exchanges:
            await channel.exchange_delete(exchange.name)
            done.append(f"deleted      exchange {exchange.name!r}")
    finally:
        await channel.close()
    return done


Check = Callable[[AbstractChannel], Awaitable[None]]


async def _compare(connection: AbstractConnection, what: str, exists: Check, same: Check) -> Entry:
    try:
        await _on_own_channel(connection, exists)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return Entry(Change.CREATED, what)
    try:
        # It exists, so this declaration cannot create it; with other settings it fails.
        await _on_own_channel(connection, same)
    except (
        aiormq.exceptions.ChannelPreconditionFailed,
        aiormq.exceptions.ChannelAccessRefused,
    ) as exc:
        return Entry(Change.CONFLICTING, what, str(exc))
    return Entry(Change.UNCHANGED, what)


async def _on_own_channel(connection: AbstractConnection, check: Check) -> None:
    # A refused declaration closes its channel; each check gets a fresh one.
    channel = await connection.channel()
    try:
        await check(channel)
    finally:
        if not channel.is_closed:
            await channel.close()


async def _passive_exchange(channel: AbstractChannel, name: str) -> None:
    await channel.declare_exchange(name, passive=True)


async def _passive_queue(channel: AbstractChannel, name: str) -> None:
    await channel.declare_queue(name, passive=True)
