"""The consumer runtime: receive from queues, persist, and only then acknowledge.

User handlers: see `consumers.app` and docs/consumers.md.
"""

from consumers.app import Consumer, SyncTransaction
from consumers.errors import DeadLetter
from consumers.message import Message

__all__ = ["Consumer", "DeadLetter", "Message", "SyncTransaction"]
