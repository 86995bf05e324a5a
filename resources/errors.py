"""FHIR errors that carry their OperationOutcome issue code and HTTP status.

https://hl7.org/fhir/R4B/operationoutcome.html
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue: severity, code, diagnostics and FHIRPath expressions."""

    code: str
    diagnostics: str
    severity: str = "error"
    expression: tuple[str, ...] = ()


class FhirError(Exception):
    """An error a client can act on; the HTTP edge maps it to status and OperationOutcome."""

    status: int = 500
    code: str = "exception"

    def __init__(self, diagnostics: str, *, code: str | None = None, expression: tuple[str, ...] = (),
                 issues: tuple[Issue, ...] = (), headers: dict[str, str] | None = None) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        first = Issue(code or self.code, diagnostics, expression=expression)
        self.issues: tuple[Issue, ...] = issues or (first,)
        self.headers = headers or {}


class Invalid(FhirError):
    """400: the request could not be parsed or failed basic FHIR validation."""

    status = 400
    code = "invalid"


class Unauthorized(FhirError):
    """401: no valid credentials."""

    status = 401
    code = "login"


class Forbidden(FhirError):
    """403: the credentials do not allow this interaction."""

    status = 403
    code = "forbidden"


class NotFound(FhirError):
    """404: no such resource, type or endpoint."""

    status = 404
    code = "not-found"


class MethodNotAllowed(FhirError):
    """405: the interaction is not allowed on this URL."""

    status = 405
    code = "not-supported"


class NotAcceptable(FhirError):
    """406: the client asked for a format the server does not produce."""

    status = 406
    code = "not-supported"


class Conflict(FhirError):
    """409: a version or identity conflict."""

    status = 409
    code = "conflict"


class Gone(FhirError):
    """410: the resource was deleted."""

    status = 410
    code = "deleted"


class PreconditionFailed(FhirError):
    """412: If-Match or a conditional interaction's criteria did not hold."""

    status = 412
    code = "conflict"


class TooLarge(FhirError):
    """413: the request body or bundle exceeds a configured limit."""

    status = 413
    code = "too-costly"


class UnsupportedMediaType(FhirError):
    """415: the request body is in a format the server does not read."""

    status = 415
    code = "not-supported"


class Unprocessable(FhirError):
    """422: the resource is well formed but breaks a business rule."""

    status = 422
    code = "processing"


class NotSupported(FhirError):
    """400 with not-supported: the request uses a feature this server does not implement."""

    status = 400
    code = "not-supported"


class Unavailable(FhirError):
    """503: a backing service is temporarily unreachable."""

    status = 503
    code = "transient"



class InsufficientStorage(FhirError):
    """507: the store's file system is full; writes succeed again by themselves once space returns."""

    status = 507
    code = "no-store"
