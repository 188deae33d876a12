"""The exceptions of the kruntimes client, and how API answers become them."""

from __future__ import annotations

import json
from typing import Any, List, Optional, Tuple


class KruntimesError(Exception):
    """Base class of every error this package raises."""


class ConfigError(KruntimesError):
    """No usable cluster configuration: no kubeconfig, an unknown context."""


class InvalidRun(KruntimesError):
    """The Run was refused: by this client's own checks or by the cluster's admission.

    `field` is the field at fault (such as `spec.script`), `reason` why; `causes` holds
    every (field, reason) pair when the cluster reported several.
    """

    def __init__(
        self, field: Optional[str], reason: str, causes: Optional[List[Tuple[str, str]]] = None
    ) -> None:
        self.field = field
        self.reason = reason
        self.causes = causes if causes is not None else ([(field, reason)] if field else [])
        super().__init__(f"{field}: {reason}" if field else reason)


class RunNotFound(KruntimesError):
    """The Run does not exist (or no longer does)."""

    def __init__(self, name: str, namespace: str) -> None:
        self.name = name
        self.namespace = namespace
        super().__init__(f'Run "{name}" not found in namespace "{namespace}"')


class Forbidden(KruntimesError):
    """The cluster refused the caller: `verb` on `resource` in `namespace` is not allowed."""

    def __init__(self, verb: str, resource: str, namespace: str, message: str) -> None:
        self.verb = verb
        self.resource = resource
        self.namespace = namespace
        self.message = message
        super().__init__(
            f'forbidden: cannot {verb} {resource} in namespace "{namespace}": {message} '
            f"(the Role needs verb {verb} on {resource})"
        )


class Unauthorized(KruntimesError):
    """The cluster did not accept the credentials (HTTP 401)."""


class ClusterUnreachable(KruntimesError):
    """The API server could not be reached (connection, TLS or timeout)."""

    def __init__(self, server: str, cause: str) -> None:
        self.server = server
        self.cause = cause
        super().__init__(f"the Kubernetes API server at {server} is unreachable: {cause}")


class RunTimeout(KruntimesError):
    """The client stopped waiting for the Run; it was cancelled.

    `phase` is the Run's last phase seen (after the cancel: normally `Cancelled`).
    """

    def __init__(self, run_name: str, waited: float, phase: Optional[str]) -> None:
        self.run_name = run_name
        self.waited = waited
        self.phase = phase
        super().__init__(
            f'Run "{run_name}" did not finish within {waited:g}s; it was cancelled '
            f"(last phase: {phase or 'unknown'})"
        )


class ApiError(KruntimesError):
    """Any other error answer of the API server."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(f"API error {status} {reason}: {message}")


def _status_body(exc: Any) -> dict[str, Any]:
    """The `metav1.Status` of an ApiException, or an empty dict."""
    body = getattr(exc, "body", None)
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not isinstance(body, str):
        return {}
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def from_api_exception(
    exc: Any, *, verb: str, resource: str, namespace: str, name: Optional[str] = None
) -> KruntimesError:
    """The typed error for an ApiException raised by `verb` on `resource`.

    `name` is the Run's name when `resource` is a Run: a 404 then means the Run is gone.
    """
    status_code = int(getattr(exc, "status", 0) or 0)
    status = _status_body(exc)
    message = str(status.get("message") or getattr(exc, "reason", "") or "")
    reason = str(status.get("reason") or getattr(exc, "reason", "") or "")
    if status_code == 403:
        return Forbidden(verb, resource, namespace, message)
    if status_code == 401:
        return Unauthorized(f"the API server refused the credentials: {message}")
    if status_code == 404 and name is not None and resource == "runs":
        return RunNotFound(name, namespace)
    if status_code in (400, 422) and resource == "runs":
        details = status.get("details") if isinstance(status.get("details"), dict) else {}
        raw_causes = details.get("causes") if isinstance(details, dict) else None
        causes: List[Tuple[str, str]] = []
        for cause in raw_causes if isinstance(raw_causes, list) else []:
            if isinstance(cause, dict) and cause.get("field"):
                causes.append((str(cause["field"]), str(cause.get("message", ""))))
        field = causes[0][0] if causes else None
        return InvalidRun(field, message, causes)
    return ApiError(status_code, reason, message)
