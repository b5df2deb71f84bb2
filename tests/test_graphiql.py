"""GraphiQL works with no internet: the page references only assets the gateway
serves itself, and a strawberry template that no longer matches the vendored files
fails loudly instead of quietly going back to the CDN."""

from __future__ import annotations

import base64
import hashlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from gateway.graphiql import (
    STATIC_PATH,
    VENDORED,
    build_graphiql_html,
    graphiql_html,
    static_files,
    strawberry_template,
)
from tests.helpers import RunningGateway


class _Refs(HTMLParser):
    """Every src/href in a page, with the tag's integrity attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str | None]] = []  # (tag, url, integrity)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for name in ("src", "href"):
            if a.get(name):
                self.refs.append((tag, a[name] or "", a.get("integrity")))


def refs_of(html: str) -> list[tuple[str, str, str | None]]:
    parser = _Refs()
    parser.feed(html)
    parser.close()
    return parser.refs


def _sri(alg: str, data: bytes) -> str:
    return f"{alg}-{base64.b64encode(hashlib.new(alg, data).digest()).decode()}"


async def test_graphiql_page_references_no_external_url(gateway: RunningGateway) -> None:
    resp = await gateway.client.get("/graphql", headers={"Accept": "text/html"})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    refs = refs_of(resp.text)
    assert refs, "no src/href found: did the page change shape?"
    for tag, url, _ in refs:
        assert not url.lower().startswith(("http:", "https:", "//")), f"<{tag}> loads {url} from the network"
        assert url.startswith(("data:", f"{STATIC_PATH}/")), url
    assert "unpkg" not in resp.text.lower()
    # every vendored asset is on the page: react, react-dom, js-cookie, graphiql (js+css), explorer (js+css)
    local = {url for _, url, _ in refs if url.startswith(STATIC_PATH)}
    assert local == {f"{STATIC_PATH}/{a.filename}" for a in VENDORED}


async def test_every_local_asset_is_served_with_its_content_type(gateway: RunningGateway) -> None:
    resp = await gateway.client.get("/graphql", headers={"Accept": "text/html"})
    local = [(tag, url, integrity) for tag, url, integrity in refs_of(resp.text) if not url.startswith("data:")]
    assert len(local) == len(VENDORED)
    for tag, url, integrity in local:
        asset = await gateway.client.get(url)
        assert asset.status_code == 200, url
        ctype = asset.headers["content-type"].split(";")[0].strip()
        if url.endswith(".js"):
            assert tag == "script"
            assert ctype in ("text/javascript", "application/javascript"), (url, ctype)
        else:
            assert url.endswith(".css") and tag == "link"
            assert ctype == "text/css", (url, ctype)
        assert "immutable" in asset.headers["cache-control"]
        # the browser enforces the template's SRI hash: what we serve must pass it
        assert integrity and integrity.startswith("sha384-"), url
        assert _sri("sha384", asset.content) == integrity, url

        again = await gateway.client.get(url, headers={"If-None-Match": asset.headers["etag"]})
        assert again.status_code == 304


async def test_graphql_api_still_answers_next_to_graphiql(gateway: RunningGateway) -> None:
    assert (await gateway.client.get(f"{STATIC_PATH}/nope.js")).status_code == 404
    data = await gateway.data("{ __typename }")
    assert data == {"__typename": "Query"}


def test_vendored_assets_match_strawberrys_template_hashes() -> None:
    """Independently of the page builder: each file hashes to the template's SRI value."""
    template = strawberry_template()
    by_url = {url: integrity for _, url, integrity in refs_of(template)}
    for asset in VENDORED:
        assert asset.url in by_url, f"strawberry's template no longer loads {asset.url}"
        data = static_files().joinpath(asset.filename).read_bytes()
        assert _sri("sha384", data) == by_url[asset.url], asset.filename


def test_page_is_built_once() -> None:
    assert graphiql_html() is graphiql_html()


def test_template_with_a_new_asset_version_fails_loudly() -> None:
    # what a strawberry upgrade bumping GraphiQL looks like
    template = strawberry_template().replace("graphiql@3.8.3/graphiql.min.js", "graphiql@3.9.0/graphiql.min.js")
    with pytest.raises(RuntimeError) as exc:
        build_graphiql_html(template)
    msg = str(exc.value)
    assert "https://unpkg.com/graphiql@3.9.0/graphiql.min.js" in msg  # unknown external asset
    assert "https://unpkg.com/graphiql@3.8.3/graphiql.min.js is not in the template" in msg
    assert "gateway/static/graphiql/README.md" in msg


def test_template_with_an_extra_external_asset_fails_loudly() -> None:
    template = strawberry_template().replace(
        "</head>", '<script src="https://cdn.jsdelivr.net/npm/something@1/x.js"></script></head>', 1
    )
    with pytest.raises(RuntimeError, match=r"cdn\.jsdelivr\.net.*no vendored copy"):
        build_graphiql_html(template)


def test_template_with_an_external_url_outside_tags_fails_loudly() -> None:
    # e.g. an inline script importing a module from a CDN
    template = strawberry_template().replace(
        "<script>\n", '<script>\n import("https://esm.sh/graphiql-plugin@1");\n', 1
    )
    with pytest.raises(RuntimeError, match=r"external URL 'https://esm\.sh/graphiql-plugin@1"):
        build_graphiql_html(template)


def test_template_with_a_different_integrity_hash_fails_loudly() -> None:
    real = strawberry_template()
    (_, _, integrity) = next(r for r in refs_of(real) if r[1] == VENDORED[0].url)
    assert integrity
    bogus = _sri("sha384", b"not react")
    with pytest.raises(RuntimeError, match=r"react-18\.2\.0\.production\.min\.js does not match the integrity"):
        build_graphiql_html(real.replace(integrity, bogus))


def test_missing_vendored_file_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"vendored file react-18\.2\.0\.production\.min\.js .* is missing"):
        build_graphiql_html(strawberry_template(), assets=tmp_path)


def test_static_path_is_configurable() -> None:
    html = build_graphiql_html(strawberry_template(), static_path="/api/assets/")
    assert 'src="/api/assets/graphiql-3.8.3.min.js"' in html
