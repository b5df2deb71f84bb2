"""Security headers for the GraphiQL page: a CSP that allows only the gateway's own
assets (the vendored files, plus the page's inline scripts by hash), no framing,
no MIME sniffing."""

from __future__ import annotations

import base64
import hashlib
from html.parser import HTMLParser


class _InlineScripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.scripts: list[str] = []
        self._in_inline = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script" and not dict(attrs).get("src"):
            self._in_inline = True
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_inline = False

    def handle_data(self, data: str) -> None:
        if self._in_inline:
            self.scripts[-1] += data


def inline_script_hashes(html: str) -> list[str]:
    parser = _InlineScripts()
    parser.feed(html)
    parser.close()
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode("utf-8")).digest()).decode() + "'"
        for s in parser.scripts
        if s.strip()
    ]


def graphiql_headers(html: str) -> dict[str, str]:
    scripts = " ".join(["'self'", *inline_script_hashes(html)])
    csp = "; ".join(
        [
            "default-src 'self'",
            f"script-src {scripts}",
            # GraphiQL (React, CodeMirror) sets style attributes at run time.
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "font-src 'self' data:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )
    return {
        "content-security-policy": csp,
        "x-content-type-options": "nosniff",
        "x-frame-options": "DENY",
        "referrer-policy": "no-referrer",
    }
