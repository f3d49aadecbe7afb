"""The wire contract's rules for values: what fits an AMQP short string, which numbers
AMQP and other languages carry, and the printable form of a foreign id."""

from __future__ import annotations

import pytest

from hareway.wire import (
    MAX_ATTEMPTS,
    attempts_so_far,
    has_unrepresentable_number,
    number_problem,
    printable,
    schema_subjects,
    short_string_problem,
)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("order.created", None),
        ("x" * 255, None),
        ("é" * 127, None),  # 254 bytes
        ("x" * 256, "256 bytes; at most 255"),
        ("é" * 128, "256 bytes in UTF-8; at most 255"),
        ("a\x00b", "control character U+0000 at position 1"),
        ("tab\there", "control character U+0009 at position 3"),
        ("a\ud800", "not Unicode text: a lone surrogate at position 1"),
        ("del\x7fis fine", None),
    ],
)
def test_short_strings_are_measured_in_utf8_bytes_without_control_characters(
    value: str, problem: str | None
) -> None:
    assert short_string_problem(value) == problem


@pytest.mark.parametrize(
    ("value", "unrepresentable"),
    [
        ({"order_id": 42, "amount": 99.5, "name": "x", "ok": True, "none": None}, False),
        ([2**63 - 1, -(2**63)], False),
        ({"a": [1, {"b": float("nan")}]}, True),
        ([float("inf")], True),
        ({"n": 2**63}, True),
        (-(2**63) - 1, True),
        (True, False),
        ("1e400", False),
    ],
)
def test_numbers_amqp_cannot_carry_are_found_anywhere(value: object, unrepresentable: bool) -> None:
    assert has_unrepresentable_number(value) is unrepresentable
    assert (number_problem(value, "payload") is not None) is unrepresentable


def test_the_problem_names_the_path_of_the_number() -> None:
    found = number_problem({"a": [0, {"b": float("-inf")}]}, "payload")
    assert found == ("payload.a.1.b", "-inf is not a finite number")


def test_the_printable_form_escapes_what_a_store_refuses_and_is_stable() -> None:
    assert printable("order-1") == "order-1"
    assert printable("a\x00b\x1f") == "a\\x00b\\x1f"
    assert printable("a\ud800") == "a\\ud800"
    long = printable("x" * 300)
    assert len(long) == 255
    assert long == printable("x" * 300)  # the same on every redelivery
    assert long != printable("x" * 301)


@pytest.mark.parametrize(
    ("header", "attempts"),
    [(None, 0), (3, 3), (b"4", 4), ("5", 5), ("many", 0), (-2, 0), (2**62, MAX_ATTEMPTS)],
)
def test_attempts_from_any_publisher_are_a_sane_count(header: object, attempts: int) -> None:
    headers = {} if header is None else {"x-hareway-attempts": header}
    assert attempts_so_far(headers) == attempts


def test_schemas_apply_to_a_cloudevents_data_and_to_other_json_whole() -> None:
    event = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "data": {"n": 1}}
    assert schema_subjects("application/json", {"n": 1}) == [("", {"n": 1})]
    assert schema_subjects("application/cloudevents+json", event) == [("data", {"n": 1})]
    assert schema_subjects("application/cloudevents+json; charset=utf-8", event) == [
        ("data", {"n": 1})
    ]
    xml = {**event, "datacontenttype": "application/xml", "data": "<n/>"}
    assert schema_subjects("application/cloudevents+json", xml) == []
    assert schema_subjects("application/cloudevents-batch+json", [event, xml]) == [
        ("0.data", {"n": 1})
    ]
