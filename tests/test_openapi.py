"""/openapi.json (issue 11): it describes every route of the app, strictly."""

from __future__ import annotations

import schemathesis

from commpro.app import create_app
from commpro.openapi import document
from commpro.ops import endpoint_table

METHODS = ("get", "put", "post", "patch", "delete")


def app_routes(config) -> set[str]:
    """'METHOD /path' for every route the app serves (the sandbox, a test stand-in, and the
    rendered view of this document aside)."""
    return {f"{r['method']} {r['path']}" for r in endpoint_table(create_app(config))
            if not r["path"].startswith(("/_sandbox", "/docs"))}


def documented(doc: dict) -> set[str]:
    return {f"{method.upper()} {path}" for path, item in doc["paths"].items() for method in item if method in METHODS}


def test_every_route_is_documented_and_nothing_else(make_config):
    routes, doc = app_routes(make_config()), documented(document())
    missing = sorted(routes - doc)
    assert not missing, "routes missing from commpro/openapi.py PATHS: " + ", ".join(missing)
    stale = sorted(doc - routes)
    assert not stale, "commpro/openapi.py documents routes the app does not serve: " + ", ".join(stale)


def bodies(doc: dict):
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            for media, content in operation.get("requestBody", {}).get("content", {}).items():
                yield f"{method.upper()} {path} ({media})", content["schema"]


def test_request_bodies_are_strict():
    loose = [name for name, schema in bodies(document())
             if "x-www-form-urlencoded" not in name and schema.get("additionalProperties") is not False]
    assert not loose, f"request bodies that accept unknown fields: {loose}"


def test_every_operation_describes_its_responses():
    doc = document()
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            assert operation["responses"], f"{method.upper()} {path} describes no response"
            for status, response in operation["responses"].items():
                assert "$ref" in response or response.get("description"), (path, method, status)


def test_the_document_loads_as_openapi_31():
    # schemathesis validates the document on load and resolves every $ref.
    schema = schemathesis.openapi.from_dict(document())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(documented(document()))


async def test_served_without_authentication(service):
    resp = await service.client.get("/openapi.json")
    assert resp.status == 200
    served = await resp.json()
    assert served["openapi"] == "3.1.0" and served["paths"].keys() == document()["paths"].keys()


async def test_rendered_view_is_served_from_our_own_files(service):
    resp = await service.client.get("/docs")
    page = await resp.text()
    assert resp.status == 200 and "/openapi.json" in page
    assert "/docs/static/swagger-ui-bundle.js" in page and "cdn" not in page.lower()
    resp = await service.client.get("/docs/static/swagger-ui-bundle.js")
    assert resp.status == 200
