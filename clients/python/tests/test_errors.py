"""API answers become typed errors: the kubernetes client's ApiException, raised by fakes
of its CustomObjectsApi and CoreV1Api, through the calls the client makes."""

from __future__ import annotations

import json
from typing import Any, Optional

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from kruntimes import (
    ApiError,
    Client,
    ClusterUnreachable,
    Forbidden,
    InvalidRun,
    RunNotFound,
    Unauthorized,
)
from kruntimes._kube import KubeApi, LogUnavailable


def api_exception(code: int, reason: str, message: str, causes: Optional[list[Any]] = None
                  ) -> ApiException:
    status: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                              "message": message, "reason": reason, "code": code}
    if causes is not None:
        status["details"] = {"causes": causes}
    exc = ApiException(status=code, reason=reason)
    exc.body = json.dumps(status)
    return exc


class Raising:
    """Every method raises the given exception (a CustomObjectsApi or CoreV1Api)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            raise self.exc
        return call


def client_raising(exc: BaseException) -> Client:
    fake = Raising(exc)
    return Client._with_api(KubeApi("team-a", fake, fake, "https://127.0.0.1:6443"))


def test_a_403_names_the_verb_the_resource_and_the_namespace() -> None:
    exc = api_exception(403, "Forbidden", 'runs.kruntimes.io is forbidden: User "bob" cannot '
                        'create resource "runs" in API group "kruntimes.io"')
    with pytest.raises(Forbidden) as caught:
        client_raising(exc).submit("bash", script="echo")
    error = caught.value
    assert (error.verb, error.resource, error.namespace) == ("create", "runs", "team-a")
    assert 'User "bob"' in error.message
    assert "cannot create runs in namespace \"team-a\"" in str(error)


def test_a_403_on_cancel_is_about_patch() -> None:
    with pytest.raises(Forbidden) as caught:
        client_raising(api_exception(403, "Forbidden", "no")).cancel("r1")
    assert caught.value.verb == "patch"


def test_a_404_on_a_run_is_run_not_found() -> None:
    with pytest.raises(RunNotFound) as caught:
        client_raising(api_exception(404, "NotFound", 'runs "r1" not found')).result("r1")
    assert (caught.value.name, caught.value.namespace) == ("r1", "team-a")
    assert str(caught.value) == 'Run "r1" not found in namespace "team-a"'


def test_a_404_on_create_is_not_run_not_found() -> None:
    # The namespace or the CRD is missing: the server's message says which.
    with pytest.raises(ApiError) as caught:
        client_raising(api_exception(404, "NotFound", 'namespaces "x" not found')).submit(
            "bash", script="echo")
    assert caught.value.status == 404 and 'namespaces "x"' in caught.value.message


def test_a_webhook_denial_is_invalid_run_with_its_fields() -> None:
    message = ('admission webhook "runs.kruntimes.io" denied the request: '
               "spec.entrypoint: Invalid value: \"../a.sh\": must not contain '..'")
    exc = api_exception(422, "Invalid", message, [
        {"field": "spec.entrypoint", "message": "must not contain '..'",
         "reason": "FieldValueInvalid"},
        {"field": "spec.timeout", "message": "too long", "reason": "FieldValueInvalid"},
    ])
    with pytest.raises(InvalidRun) as caught:
        client_raising(exc).submit("bash", script="echo")
    error = caught.value
    assert error.field == "spec.entrypoint"
    assert error.reason == message
    assert error.causes == [("spec.entrypoint", "must not contain '..'"),
                            ("spec.timeout", "too long")]


def test_a_422_without_causes_keeps_the_message() -> None:
    with pytest.raises(InvalidRun) as caught:
        client_raising(api_exception(422, "Invalid", "bad")).submit("bash", script="echo")
    assert caught.value.field is None and str(caught.value) == "bad"


def test_a_401_is_unauthorized() -> None:
    with pytest.raises(Unauthorized):
        client_raising(api_exception(401, "Unauthorized", "Unauthorized")).result("r1")


def test_a_500_is_an_api_error() -> None:
    with pytest.raises(ApiError) as caught:
        client_raising(api_exception(500, "InternalError", "boom")).result("r1")
    assert (caught.value.status, caught.value.reason) == (500, "InternalError")


def test_a_body_that_is_not_a_status_still_gives_the_reason() -> None:
    exc = ApiException(status=503, reason="Service Unavailable")
    exc.body = "<html>"
    with pytest.raises(ApiError) as caught:
        client_raising(exc).result("r1")
    assert caught.value.message == "Service Unavailable"


def test_a_connection_failure_is_cluster_unreachable() -> None:
    exc = urllib3.exceptions.MaxRetryError(None, "/apis", "connection refused")  # type: ignore[arg-type]
    with pytest.raises(ClusterUnreachable) as caught:
        client_raising(exc).result("r1")
    assert caught.value.server == "https://127.0.0.1:6443"
    assert "unreachable" in str(caught.value)


def test_a_forbidden_pod_log_is_about_pods_log() -> None:
    fake = Raising(api_exception(403, "Forbidden", "no logs for you"))
    api = KubeApi("team-a", fake, fake, "https://x")
    with pytest.raises(Forbidden) as caught:
        list(api.pod_log("pod-1", "main", None, 1.0))
    assert (caught.value.verb, caught.value.resource) == ("get", "pods/log")


def test_a_400_on_create_is_invalid_run() -> None:
    with pytest.raises(InvalidRun) as caught:
        client_raising(api_exception(400, "BadRequest", "bad body")).submit("bash", script="x")
    assert caught.value.reason == "bad body"


def test_a_400_on_the_pod_log_is_log_unavailable_not_invalid_run() -> None:
    fake = Raising(api_exception(400, "BadRequest", "container is waiting to start"))
    api = KubeApi("team-a", fake, fake, "https://x")
    with pytest.raises(LogUnavailable):
        list(api.pod_log("pod-1", "main", None, 1.0))
