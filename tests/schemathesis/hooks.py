"""Schemathesis hooks for scripts/schemathesis (see schemathesis.toml beside this file)."""

import schemathesis


@schemathesis.hook
def filter_body(ctx, body):
    """Leaves out request bodies that are not UTF-8.

    `cargo lambda watch` cannot carry them: for a `Content-Type: application/json` request it answers
    500 itself, without invoking the function. API Gateway sends such a body base64-encoded, and the
    functions answer 400: tests/tests/suite/hostile.rs (every_route_with_a_body_refuses_invalid_utf8)
    sends exactly that event to every route that takes a body.
    """
    if isinstance(body, (bytes, bytearray)):
        try:
            bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True
