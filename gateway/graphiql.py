"""GraphiQL that works offline.

Strawberry's GraphiQL page (``strawberry/static/graphiql.html``) loads React, GraphiQL
and the explorer plugin from unpkg.com; with no internet the page stays blank. We
serve the same page with those URLs pointed at copies vendored in
``gateway/static/graphiql`` (see its README.md for how to update them).

The rewrite is strict, so a strawberry upgrade can't quietly bring the CDN back:
building the page raises :class:`RuntimeError` if an expected unpkg URL is missing
from the template (a version bump), if any other external URL is left in it, or if a
vendored file doesn't match the template's ``integrity`` hash. :func:`graphiql_routes`
builds the page eagerly, so that happens when the app is created, not on the first
browser visit.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.resources
import os
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from importlib.resources.abc import Traversable

from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

#: URL path the vendored files are served under.
STATIC_PATH = "/graphiql/static"

_STATIC_PACKAGE = "gateway"
_STATIC_DIR = "static/graphiql"


@dataclass(frozen=True)
class VendoredAsset:
    url: str  # exactly as it appears in strawberry's template
    filename: str  # in gateway/static/graphiql


#: Every external asset of strawberry's GraphiQL template and its local copy. The
#: version is part of each file name, so the files can be cached forever.
VENDORED: tuple[VendoredAsset, ...] = (
    VendoredAsset("https://unpkg.com/react@18.2.0/umd/react.production.min.js", "react-18.2.0.production.min.js"),
    VendoredAsset(
        "https://unpkg.com/react-dom@18.2.0/umd/react-dom.production.min.js", "react-dom-18.2.0.production.min.js"
    ),
    # The template reads a Django-style CSRF cookie with it (``Cookies.get``).
    VendoredAsset("https://unpkg.com/js-cookie@3.0.5/dist/js.cookie.min.js", "js-cookie-3.0.5.min.js"),
    VendoredAsset("https://unpkg.com/graphiql@3.8.3/graphiql.min.css", "graphiql-3.8.3.min.css"),
    VendoredAsset("https://unpkg.com/graphiql@3.8.3/graphiql.min.js", "graphiql-3.8.3.min.js"),
    VendoredAsset(
        "https://unpkg.com/@graphiql/plugin-explorer@1.0.2/dist/style.css", "graphiql-plugin-explorer-1.0.2.css"
    ),
    VendoredAsset(
        "https://unpkg.com/@graphiql/plugin-explorer@1.0.2/dist/index.umd.js", "graphiql-plugin-explorer-1.0.2.umd.js"
    ),
)

# Absolute URLs allowed to remain in the page: XML namespace names (the inline SVG
# favicon's xmlns) are identifiers, never fetched.
_ALLOWED_URL_PREFIXES = ("http://www.w3.org/",)
_ABSOLUTE_URL = re.compile(r"https?://[^\s\"'<>`)]+", re.IGNORECASE)


def strawberry_template() -> str:
    """The GraphiQL page shipped with the installed strawberry."""
    return importlib.resources.files("strawberry").joinpath("static/graphiql.html").read_text(encoding="utf-8")


def static_files() -> Traversable:
    """The directory holding the vendored files."""
    return importlib.resources.files(_STATIC_PACKAGE).joinpath(_STATIC_DIR)


class _Tag:
    def __init__(self, name: str, attrs: dict[str, str | None], text: str) -> None:
        self.name, self.attrs, self.text = name, attrs, text


class _TagCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[_Tag] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(_Tag(tag, dict(attrs), self.get_starttag_text() or ""))

    handle_startendtag = handle_starttag


def _is_external(url: str) -> bool:
    u = url.strip().lower()
    return u.startswith(("http:", "https:", "//"))


def _check_integrity(integrity: str, data: bytes, asset: VendoredAsset) -> None:
    """Raise unless ``data`` matches one of the SRI hashes in ``integrity``."""
    expected = []
    for token in integrity.split():
        alg, _, digest = token.partition("-")
        digest = digest.split("?", 1)[0]
        if alg.lower() in ("sha256", "sha384", "sha512"):
            actual = base64.b64encode(hashlib.new(alg.lower(), data).digest()).decode()
            if actual == digest:
                return
            expected.append(token)
    raise RuntimeError(
        f"GraphiQL: vendored {asset.filename} does not match the integrity hash strawberry's template gives for "
        f"{asset.url} ({' '.join(expected) or integrity!r}); the browser would refuse it. Re-vendor it "
        "(gateway/static/graphiql/README.md)."
    )


def build_graphiql_html(template: str, *, static_path: str = STATIC_PATH, assets: Traversable | None = None) -> str:
    """``template`` with every :data:`VENDORED` URL replaced by ``static_path/<file>``.

    Raises :class:`RuntimeError` if a vendored URL is not in the template, if another
    external URL is, or if a vendored file is missing or fails the tag's integrity hash.
    """
    assets = assets if assets is not None else static_files()
    by_url = {a.url: a for a in VENDORED}
    problems: list[str] = []

    collector = _TagCollector()
    collector.feed(template)
    collector.close()

    seen: set[str] = set()
    replacements: dict[str, str] = {}
    for tag in collector.tags:
        for attr in ("src", "href"):
            url = tag.attrs.get(attr)
            if not url or not _is_external(url):
                continue
            asset = by_url.get(url)
            if asset is None:
                problems.append(f"<{tag.name} {attr}={url!r}> loads from the network and has no vendored copy")
                continue
            seen.add(url)
            try:
                data = assets.joinpath(asset.filename).read_bytes()
            except FileNotFoundError:
                problems.append(f"vendored file {asset.filename} (for {url}) is missing")
                continue
            integrity = tag.attrs.get("integrity")
            if integrity:
                _check_integrity(integrity, data, asset)
            # crossorigin and integrity stay: same-origin requests satisfy both, and
            # the browser keeps verifying the hash.
            replacements[tag.text] = tag.text.replace(url, f"{static_path.rstrip('/')}/{asset.filename}")

    for asset in VENDORED:
        if asset.url not in seen:
            problems.append(f"expected {asset.url} is not in the template")

    if not problems:
        html = template
        for old, new in replacements.items():
            html = html.replace(old, new)
        leftover = sorted({u for u in _ABSOLUTE_URL.findall(html) if not u.lower().startswith(_ALLOWED_URL_PREFIXES)})
        problems.extend(f"external URL {u!r} left in the page" for u in leftover)

    if problems:
        raise RuntimeError(
            "GraphiQL: strawberry's GraphiQL template no longer matches the vendored assets, so the page would "
            "need the internet. Update gateway/static/graphiql and VENDORED in gateway/graphiql.py "
            "(see gateway/static/graphiql/README.md). Problems: " + "; ".join(problems)
        )
    return html


@functools.cache
def graphiql_html() -> str:
    """The offline GraphiQL page (built once per process)."""
    return build_graphiql_html(strawberry_template())


class _VersionedStaticFiles(StaticFiles):
    """Static files whose names carry their version: cacheable for a year."""

    def file_response(
        self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["cache-control"] = "public, max-age=31536000, immutable"
        return response


def graphiql_routes() -> list[BaseRoute]:
    """Routes serving the vendored files under :data:`STATIC_PATH`.

    Also builds the page, so a template mismatch fails app creation (RuntimeError)
    instead of the first visit to GraphiQL.
    """
    graphiql_html()
    return [
        Mount(
            STATIC_PATH,
            app=_VersionedStaticFiles(packages=[(_STATIC_PACKAGE, _STATIC_DIR)]),
            name="graphiql-static",
        )
    ]
