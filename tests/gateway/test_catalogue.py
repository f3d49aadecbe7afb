"""The problem catalogue is one source: the error classes make the OpenAPI examples, the
`/problems/<slug>` pages and docs/problems.md; routing answers are problems too."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate

from gateway import errors
from gateway.app import create_app
from gateway.catalogue import DOC, documented_table, markdown_table, problem_types
from gateway.settings import GatewaySettings


@pytest.fixture(scope="module")
def app() -> FastAPI:
    # Nothing here runs the lifespan: routing, pages and the document need no broker.
    return create_app(GatewaySettings(_env_file=None))


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client


def test_docs_problems_md_holds_the_table_the_classes_make() -> None:
    assert documented_table(DOC.read_text(encoding="utf-8")) == markdown_table(), (
        "docs/problems.md is stale: run `python -m gateway.catalogue`"
    )


def test_every_problem_type_is_one_slug_with_one_status_and_title() -> None:
    seen: dict[str, tuple[int, str]] = {}
    for value in vars(errors).values():
        if isinstance(value, type) and issubclass(value, errors.GatewayError) and value.when:
            shape = (value.status, value.title)
            assert seen.setdefault(value.slug, shape) == shape, value
            assert value.example, value
    assert len(problem_types()) == len(seen)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_the_openapi_document_validates_and_every_ref_resolves(app: FastAPI) -> None:
    document = app.openapi()
    validate(document)
    refs = set(_refs(document))
    assert "#/components/schemas/PublishRequest" in refs
    for ref in refs:
        assert _resolve(document, ref) is not None, ref


def test_every_documented_problem_example_is_a_problem_type_of_its_status(app: FastAPI) -> None:
    by_type = {f"/problems/{error.slug}": error for error in problem_types()}
    documented = 0
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                content = response.get("content", {}).get("application/problem+json")
                if content is None:
                    continue
                for example in content["examples"].values():
                    error = by_type[example["value"]["type"]]
                    assert error.status == int(status), (path, method, status)
                    assert example["value"] == {
                        "type": f"/problems/{error.slug}",
                        "title": error.title,
                        "status": error.status,
                        "detail": error.example,
                        "retryable": error.retryable,
                    }
                    if error.retry_after:
                        assert "Retry-After" in response["headers"], (path, status)
                    documented += 1
    assert documented > 50


def test_schemathesis_reaches_the_batch_body(app: FastAPI) -> None:
    # A `$ref` into nowhere made every generated batch `{"messages": []}` or junk.
    operation = schemathesis.openapi.from_dict(app.openapi())["/v1/exchanges/{exchange}/batch"][
        "POST"
    ]
    messages: list[Any] = []

    @given(case=operation.as_strategy())
    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def collect(case: Any) -> None:
        if isinstance(case.body, dict) and isinstance(case.body.get("messages"), list):
            messages.extend(case.body["messages"])

    collect()
    assert any(isinstance(message, dict) and "routing_key" in message for message in messages)


async def test_each_problem_type_uri_is_a_page(client: httpx.AsyncClient) -> None:
    index = await client.get("/problems/")
    assert index.status_code == 200
    assert index.headers["content-type"].startswith("text/html")
    for error in problem_types():
        assert f'href="/problems/{error.slug}"' in index.text
        page = await client.get(f"/problems/{error.slug}")
        assert page.status_code == 200, error.slug
        assert page.headers["content-type"].startswith("text/html")
        assert error.title.replace("'", "&#x27;") in page.text
        assert f"HTTP {error.status}" in page.text
    missing = await client.get("/problems/no-such-type")
    assert missing.status_code == 404
    assert missing.json()["type"] == "/problems/not-found"


async def test_an_unknown_path_is_a_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/nothing")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "/problems/not-found",
        "title": "Not found",
        "status": 404,
        "detail": "no route for GET /v2/nothing",
        "retryable": False,
    }


async def test_a_wrong_method_is_a_405_problem_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.delete("/v1/exchanges/orders/messages")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert (problem["type"], problem["retryable"]) == ("/problems/method-not-allowed", False)
