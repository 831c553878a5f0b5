"""Bitrix answers -> typed errors: what may be retried, what may already have happened."""

from __future__ import annotations

import pytest

from thoth_pbx.clients.bitrix import errors as e


@pytest.mark.parametrize(
    ("status", "body", "kind", "retryable", "maybe_delivered"),
    [
        (400, {"error": "ERROR_CORE", "error_description": "Unknown TYPE"}, e.BitrixLogicError, False, False),
        (
            400,
            {"error": "INVALID_ARGUMENT", "error_description": "CALL_ID must be a string"},
            e.BitrixLogicError,
            False,
            False,
        ),
        (
            404,
            {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"},
            e.BitrixLogicError,
            False,
            False,
        ),
        (403, {"error": "insufficient_scope", "error_description": ""}, e.BitrixPermissionError, False, False),
        # permission refusals that come with a 401: no token refresh, no endless retry
        (401, {"error": "insufficient_scope", "error_description": ""}, e.BitrixPermissionError, False, False),
        (
            401,
            {"error": "ACCESS_DENIED", "error_description": "REST API is available only on commercial plans"},
            e.BitrixPermissionError,
            False,
            False,
        ),
        (401, {"error": "user_access_error", "error_description": ""}, e.BitrixPermissionError, False, False),
        (401, {"error": "INVALID_CREDENTIALS", "error_description": ""}, e.BitrixPermissionError, False, False),
        (
            401,
            {"error": "expired_token", "error_description": "The access token provided has expired."},
            e.BitrixAuthError,
            True,
            False,
        ),
        (
            401,
            {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"},
            e.BitrixAuthError,
            True,
            False,
        ),
        (
            503,
            {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"},
            e.QueryLimitExceeded,
            True,
            False,
        ),
        (
            503,
            {"error": "OVERLOAD_LIMIT", "error_description": "REST API is blocked due to overload"},
            e.QueryLimitExceeded,
            True,
            False,
        ),
        (429, {"error": "OPERATION_TIME_LIMIT", "error_description": ""}, e.OperationTimeLimit, True, False),
        (503, "<html>503 Service Temporarily Unavailable</html>", e.BitrixUnavailable, True, False),
        (502, "<html>Bad gateway</html>", e.BitrixUnavailable, True, True),
        (
            500,
            {"error": "INTERNAL_SERVER_ERROR", "error_description": "Internal server error"},
            e.BitrixUnavailable,
            True,
            True,
        ),
        (500, {"error": "PORTAL_DELETED", "error_description": "Portal was deleted"}, e.BitrixUnavailable, True, False),
    ],
)
def test_replies_map_to_typed_errors(
    status: int, body: object, kind: type, retryable: bool, maybe_delivered: bool
) -> None:
    error = e.error_from_reply(status, body, "telephony.externalcall.register")
    assert type(error) is kind
    assert error.retryable is retryable and error.maybe_delivered is maybe_delivered
    assert error.status == status and "telephony.externalcall.register" in str(error)


def test_permission_errors_tell_the_admin_what_to_do() -> None:
    error = e.error_from_reply(401, {"error": "insufficient_scope"}, "imconnector.register")
    assert (
        isinstance(error, e.BitrixLogicError)
        and "reinstall the app" in str(error)
        and "imconnector.register" in str(error)
    )


def test_finish_after_finish_is_recognisable() -> None:
    repeat = e.error_from_code(
        "ERROR_CORE",
        "Call is not found (call should be registered prior to finishing)",
        status=400,
        method="telephony.externalcall.finish",
    )
    assert isinstance(repeat, e.BitrixLogicError) and repeat.is_call_not_found()
    other = e.error_from_code("ERROR_CORE", "User is not found or is not active", status=400, method=None)
    assert isinstance(other, e.BitrixLogicError) and not other.is_call_not_found()
