"""The offline GraphiQL page really renders in a browser under its own CSP (headless
Chromium, where installed): the vendored scripts load, the inline ones match their
hashes, and the browser reports no CSP violation."""

from __future__ import annotations

from tests.helpers import RunningGateway, chromium, headless_dom


async def test_graphiql_renders_under_its_content_security_policy(gateway: RunningGateway) -> None:
    chromium()  # skips where there is none
    dom, violations = await headless_dom(f"{gateway.url}/graphql", budget_ms=10000)
    assert violations == []
    assert "graphiql-editor" in dom, "GraphiQL did not render (its editor is missing from the DOM)"
