"""The error hierarchy and the schema's SourceErrorCode enum agree."""

from __future__ import annotations

import gateway.errors as errors
from gateway.errors import SourceError, SourceErrorCode, UpstreamHTTPError, source_error_of
from gateway.outcomes import SourceStatus, status_of


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


def test_every_source_error_code_is_an_enum_member_and_back() -> None:
    codes = {cls.code for cls in [SourceError, *_subclasses(SourceError)]}
    assert codes <= {member.value for member in SourceErrorCode}
    assert {member.value for member in SourceErrorCode} <= codes  # no member without a class


def test_a_peer_s_error_is_rebuilt_as_the_same_class() -> None:
    for cls in _subclasses(SourceError):
        if cls in (UpstreamHTTPError, errors.UpstreamError, errors.Rejected):
            continue
        rebuilt = source_error_of(cls.code, "from a peer")
        assert type(rebuilt) is cls and rebuilt.message == "from a peer"
    http = source_error_of("UPSTREAM_HTTP_ERROR", "x", http_status=503)
    assert isinstance(http, UpstreamHTTPError) and http.http_status == 503 and http.retryable
    assert source_error_of("NO_SUCH_CODE", "x").code == "INTERNAL"


def test_statuses_are_classified_in_one_place() -> None:
    assert status_of(errors.UpstreamTimeout("t")) is SourceStatus.TIMEOUT
    assert status_of(errors.DeadlineExceeded("d")) is SourceStatus.TIMEOUT
    assert status_of(errors.CircuitOpen("c")) is SourceStatus.SKIPPED
    assert status_of(UpstreamHTTPError(500, "h")) is SourceStatus.FAILED
    assert status_of(errors.UnknownSource("u")) is SourceStatus.FAILED


def test_the_logged_code_is_the_code_the_client_gets() -> None:
    from graphql import GraphQLError

    from gateway.schema.errors import classify, code_of

    cases = [
        GraphQLError("Syntax Error: Expected Name, found <EOF>."),
        GraphQLError("Unknown fragment 'Missing'."),
        GraphQLError("Too deep", extensions={"code": "QUERY_TOO_DEEP"}),
        GraphQLError("bad", original_error=errors.CriticalSourceFailed("critical source 'x' has no data")),
        GraphQLError("Int cannot represent 'x'", original_error=GraphQLError("Int cannot represent 'x'")),
        GraphQLError("boom", original_error=RuntimeError("boom")),
    ]
    for error in cases:
        assert code_of(error) == classify(error, None).extensions["code"], error.message
