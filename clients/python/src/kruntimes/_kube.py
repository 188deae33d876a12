"""The Kubernetes calls the client makes, each with its errors turned into typed ones.

Everything goes through the official `kubernetes` package with the caller's own
credentials: runs (create, get, watch, patch), pods (get) and pods/log (get).
"""

from __future__ import annotations

import json
from typing import Any, Dict, Generator, Iterator, Optional, Tuple

import urllib3
from kubernetes import watch as _watch_module
from kubernetes.client.exceptions import ApiException

from ._spec import GROUP, PLURAL, VERSION
from .errors import ClusterUnreachable, KruntimesError, RunNotFound, from_api_exception

INJECTION_STATUS_ANNOTATION = "kruntimes.io/injection-status"
"""The pod annotation in which the webhook records the container it made the agent."""

CONNECT_TIMEOUT_SECONDS = 10.0
"""How long a connection to the API server may take before it counts as unreachable."""

REQUEST_TIMEOUT_SECONDS = 30.0
"""How long one non-streaming request may take (reads of a single object are small)."""

_NETWORK_ERRORS = (urllib3.exceptions.HTTPError, OSError)


class LogIdle(Exception):
    """No log line arrived within the read timeout (the stream is still open)."""


class PodGone(Exception):
    """The pod does not exist."""


class LogUnavailable(Exception):
    """The server cannot serve the container's log now (400: a container that is not
    running, for example)."""


# The watch helper has no type hints.
k8s_watch: Any = _watch_module


class KubeApi:
    """The calls of one client, in one namespace."""

    def __init__(self, namespace: str, custom: Any, core: Any, server: str) -> None:
        self.namespace = namespace
        self._custom = custom
        self._core = core
        self.server = server

    def _unreachable(self, exc: BaseException) -> ClusterUnreachable:
        return ClusterUnreachable(self.server, f"{type(exc).__name__}: {exc}")

    def _call(
        self, verb: str, resource: str, fn: Any, *args: Any, name: Optional[str] = None,
        **kwargs: Any,
    ) -> Any:
        try:
            return fn(*args, _request_timeout=(CONNECT_TIMEOUT_SECONDS, REQUEST_TIMEOUT_SECONDS),
                      **kwargs)
        except ApiException as exc:
            raise from_api_exception(
                exc, verb=verb, resource=resource, namespace=self.namespace, name=name
            ) from None
        except _NETWORK_ERRORS as exc:
            raise self._unreachable(exc) from None

    def create_run(self, body: Dict[str, Any]) -> Dict[str, Any]:
        created = self._call(
            "create", "runs", self._custom.create_namespaced_custom_object,
            GROUP, VERSION, self.namespace, PLURAL, body,
        )
        return dict(created)

    def get_run(self, name: str) -> Dict[str, Any]:
        run = self._call(
            "get", "runs", self._custom.get_namespaced_custom_object,
            GROUP, VERSION, self.namespace, PLURAL, name, name=name,
        )
        return dict(run)

    def cancel_run(self, name: str) -> None:
        self._call(
            "patch", "runs", self._custom.patch_namespaced_custom_object,
            GROUP, VERSION, self.namespace, PLURAL, name, {"spec": {"cancel": True}}, name=name,
        )

    def watch_run(
        self, name: str, resource_version: Optional[str], seconds: int
    ) -> Iterator[Dict[str, Any]]:
        """The Run's states as they change, for at most `seconds`; ends early (the caller
        reads the Run again) when the watch reports an error such as an expired version."""
        watcher = k8s_watch.Watch()
        kwargs: Dict[str, Any] = {
            "field_selector": f"metadata.name={name}",
            "timeout_seconds": seconds,
            "_request_timeout": (CONNECT_TIMEOUT_SECONDS, seconds + REQUEST_TIMEOUT_SECONDS),
        }
        if resource_version:
            kwargs["resource_version"] = resource_version
        try:
            for event in watcher.stream(
                self._custom.list_namespaced_custom_object,
                GROUP, VERSION, self.namespace, PLURAL, **kwargs,
            ):
                kind = event.get("type")
                obj = event.get("object")
                if kind == "DELETED":
                    raise RunNotFound(name, self.namespace)
                if kind == "ERROR" or not isinstance(obj, dict):
                    return
                if kind in ("ADDED", "MODIFIED"):
                    yield obj
        except ApiException as exc:
            if getattr(exc, "status", None) == 410:
                return
            raise from_api_exception(
                exc, verb="watch", resource="runs", namespace=self.namespace, name=name
            ) from None
        except _NETWORK_ERRORS as exc:
            raise self._unreachable(exc) from None
        finally:
            watcher.stop()

    def get_runtime(self, name: str) -> Optional[Dict[str, Any]]:
        """The Runtime, or None when it cannot be read (missing, or not allowed)."""
        try:
            runtime = self._call(
                "get", "runtimes", self._custom.get_namespaced_custom_object,
                GROUP, VERSION, self.namespace, "runtimes", name,
            )
        except KruntimesError:
            return None
        return dict(runtime)

    def pod_containers(self, pod: str) -> Optional[Tuple[Dict[str, str], list[str]]]:
        """The pod's annotations and container names, or None when the pod is gone."""
        try:
            obj = self._call("get", "pods", self._core.read_namespaced_pod, pod, self.namespace)
        except KruntimesError as exc:
            if getattr(exc, "status", None) == 404:
                return None
            raise
        annotations = dict(obj.metadata.annotations or {})
        names = [c.name for c in (obj.spec.containers or [])]
        return annotations, names

    def pod_log(
        self, pod: str, container: str, since_seconds: Optional[int], idle_seconds: float,
        follow: bool = True,
    ) -> Generator[bytes, None, None]:
        """The container's log lines from `since_seconds` ago; with `follow`, new lines
        as they are written. Raises LogIdle when none arrives for `idle_seconds`,
        PodGone when the pod does not exist, LogUnavailable on a 400."""
        kwargs: Dict[str, Any] = {"container": container, "follow": follow}
        if since_seconds is not None:
            kwargs["since_seconds"] = since_seconds
        try:
            response = self._core.read_namespaced_pod_log(
                pod, self.namespace, _preload_content=False,
                _request_timeout=(CONNECT_TIMEOUT_SECONDS, idle_seconds), **kwargs,
            )
        except ApiException as exc:
            if getattr(exc, "status", None) == 404:
                raise PodGone() from None
            if getattr(exc, "status", None) == 400:
                raise LogUnavailable(str(exc.reason)) from None
            raise from_api_exception(
                exc, verb="get", resource="pods/log", namespace=self.namespace
            ) from None
        except _NETWORK_ERRORS as exc:
            raise self._unreachable(exc) from None
        try:
            yield from _lines(response)
        except (urllib3.exceptions.ReadTimeoutError, TimeoutError):
            raise LogIdle() from None
        except urllib3.exceptions.ProtocolError as exc:
            # Some urllib3 versions wrap a read timeout of a chunked body in a
            # ProtocolError whose only trace of it is the message.
            if "timed out" in str(exc):
                raise LogIdle() from None
            # The stream broke (the server closed it): the caller reconnects.
            return
        except _NETWORK_ERRORS as exc:
            raise self._unreachable(exc) from None
        finally:
            # close(): a follow stream left early must not go back to the pool unread.
            response.close()
            response.release_conn()


def _lines(response: Any) -> Iterator[bytes]:
    """The lines of a streamed response, each as soon as its newline arrives."""
    if getattr(response, "chunked", False) and getattr(response, "supports_chunked_reads",
                                                       lambda: False)():
        chunks: Iterator[bytes] = response.read_chunked(decode_content=True)
    else:
        chunks = iter(lambda: bytes(response.read1(65536)), b"")
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from complete
    if pending:
        yield pending


def injected_container(annotations: Dict[str, str]) -> Optional[str]:
    """The container named by the pod's injection-status annotation, if it names one."""
    raw = annotations.get(INJECTION_STATUS_ANNOTATION)
    if not raw:
        return None
    try:
        status = json.loads(raw)
    except ValueError:
        return None
    container = status.get("container") if isinstance(status, dict) else None
    return container if isinstance(container, str) and container else None
