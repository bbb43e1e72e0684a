"""The lab API's wire format: HTTP framing and Kubernetes Status errors, both ways."""
from __future__ import annotations

import pytest

from netlab.model.errors import InvalidError, LabError, NotFoundError, StateError
from netlab.runtime import api


def test_request_is_parsed_only_when_whole():
    raw = api.encode_request("POST", "/api/v1/namespaces/default/pods?watch=0", {"kind": "Pod"})
    assert api.parse_request(raw[:10]) is None
    assert api.parse_request(raw[:-3]) is None
    req = api.parse_request(raw)
    assert (req.method, req.path, req.query, req.body) == \
        ("POST", "/api/v1/namespaces/default/pods", {"watch": "0"}, {"kind": "Pod"})


@pytest.mark.parametrize("raw, code", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n", 413),
    (b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n{{{", 400),
    (b"X" * (api.MAX_HEADER + 1), 400),
])
def test_bad_requests_are_refused(raw, code):
    with pytest.raises(api.ApiError) as err:
        api.parse_request(raw)
    assert err.value.code == code


@pytest.mark.parametrize("exc, code, reason, back", [
    (InvalidError("must be a port", file="a.yaml", obj="Service/x", field="spec.ports[0].port"), 422, "Invalid",
     InvalidError),
    (NotFoundError('pods "x" not found'), 404, "NotFound", NotFoundError),
    (api.Conflict('services "x" already exists'), 409, "AlreadyExists", api.Conflict),
    (StateError("cannot remove the last node"), 409, "Conflict", StateError),
    (LabError("cannot delete nodes"), 400, "BadRequest", LabError),
    (RuntimeError("boom"), 500, "InternalError", LabError),
])
def test_errors_travel_as_status_and_back(exc, code, reason, back):
    got_code, status = api.status_of(exc)
    assert (got_code, status["kind"], status["status"], status["reason"], status["code"]) == \
        (code, "Status", "Failure", reason, code)
    raw = api.encode_response(got_code, status)
    again = api.error_of(*api.parse_response(raw))
    assert isinstance(again, back)
    if isinstance(exc, LabError):
        assert again.exit_code == exc.exit_code          # the CLI exits as it would in-process
        assert str(again) == str(exc)        # file, object and field survive the trip
    else:
        assert "boom" in str(again)
