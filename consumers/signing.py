"""Standard Webhooks signatures (https://www.standardwebhooks.com/): what a receiver in any
language checks with its own library.

Signed here with `hmac` rather than the `standardwebhooks` package: its `sign` takes the
body as `str` and encodes it as UTF-8, and a message body is bytes that need not be UTF-8.
The tests verify every request with that package (tests/support/receiver.py), and once
with Node's own crypto, so the bytes are the specification's, not only ours.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


def signature(keys: Sequence[bytes], message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "id.timestamp.body">` for each key, space-separated: while
    a secret is rotated, a receiver that knows either one accepts the request."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        for key in keys
    )


def signed_headers(
    keys: Sequence[bytes], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    return {
        ID_HEADER: message_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(keys, message_id, timestamp, body),
    }
