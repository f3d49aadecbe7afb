"""The OpenAPI document: complete, served at /docs, and fuzzed by schemathesis in-process."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import httpx
import pytest
import schemathesis
import yaml
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings

from gateway.app import create_app
from gateway.settings import ApiKey, GatewaySettings

PREFIX = f"t{uuid.uuid4().hex[:8]}"
# Random exchange names only ever meet 404; fuzz the bodies against one that exists.
EXCHANGE = f"{PREFIX}.orders"


@pytest.fixture(scope="module", params=["open", "with-keys"])
def fuzzed_app(
    request: pytest.FixtureRequest, rabbitmq_url: str, tmp_path_factory: pytest.TempPathFactory
) -> FastAPI:
    # With keys configured and none sent, every /v1 answer must be a documented 401.
    keys = (
        (ApiKey(name="fuzz", sha256=hashlib.sha256(b"k").hexdigest(), scopes=("admin",)),)
        if request.param == "with-keys"
        else ()
    )
    base = tmp_path_factory.mktemp("fuzz")
    prefix = PREFIX
    # The app's lifespan lasts as long as schemathesis's ASGI client (the test process), so
    # its entities clean up after themselves: the queue expires, the exchange follows.
    topology = {
        "exchanges": [{"name": f"{prefix}.orders", "auto_delete": True}],
        "queues": [{"name": f"{prefix}.q", "arguments": {"x-expires": 60_000}}],
        "bindings": [{"exchange": f"{prefix}.orders", "queue": f"{prefix}.q", "routing_key": "#"}],
    }
    path = base / "topology.yaml"
    path.write_text(yaml.safe_dump(topology))
    return create_app(
        GatewaySettings(
            rabbitmq_url=rabbitmq_url,
            database_url=f"sqlite+aiosqlite:///{base / 'fuzz.db'}",
            topology_file=str(path),
            api_keys=keys,
            _env_file=None,
        )
    )


@pytest.fixture(scope="module")
def api_schema(fuzzed_app: FastAPI) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)


def test_fuzzing_every_operation_finds_no_undocumented_5xx(api_schema: Any) -> None:
    # schemathesis's pytest plugin does not run on this pytest; its Python API drives
    # hypothesis directly, one bounded run per operation.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 6
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=30,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: Any) -> None:
            if case.path_parameters and "exchange" in case.path_parameters:
                case.path_parameters["exchange"] = EXCHANGE
            response = case.call()
            if response.status_code == 503:
                # Documented: the broker or the store is unavailable, with Retry-After.
                assert "retry-after" in {name.lower() for name in response.headers}
            else:
                assert response.status_code < 500, (case.path, response.status_code, response.text)
            case.validate_response(
                response,
                checks=[
                    schemathesis.checks.status_code_conformance,
                    schemathesis.checks.content_type_conformance,
                    schemathesis.checks.response_schema_conformance,
                ],
            )

        check()


async def test_every_path_documents_its_errors_with_the_problem_schema(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    expected = {
        ("/v1/exchanges/{exchange}/messages", "post"): {
            "202",
            "400",
            "401",
            "403",
            "404",
            "408",
            "409",
            "413",
            "415",
            "422",
            "429",
            "431",
            "503",
        },
        ("/v1/exchanges/{exchange}/batch", "post"): {
            "202",
            "207",
            "400",
            "401",
            "403",
            "404",
            "408",
            "409",
            "413",
            "415",
            "422",
            "429",
            "431",
            "503",
        },
        ("/v1/messages/{message_id}", "get"): {"200", "401", "403", "404"},
        ("/v1/queues/{queue}/messages", "get"): {"200", "401", "403", "422"},
        ("/readyz", "get"): {"200", "503"},
    }
    for (path, method), statuses in expected.items():
        responses = document["paths"][path][method]["responses"]
        assert statuses <= set(responses), (path, set(responses))
        for status, response in responses.items():
            if int(status) >= 400:
                content = response["content"]["application/problem+json"]
                assert set(content["schema"]["required"]) == {"type", "title", "status", "detail"}
                assert content["example"]["status"] == int(status)
    assert set(document["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert document["paths"]["/v1/exchanges/{exchange}/messages"]["post"]["security"]
    assert "security" not in document["paths"]["/healthz"]["get"]
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


def test_openapi_document_needs_no_broker() -> None:
    # Building the document touches no resource: the lifespan is what connects.
    document = create_app(GatewaySettings(_env_file=None)).openapi()
    assert "/v1/exchanges/{exchange}/batch" in document["paths"]
