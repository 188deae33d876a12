"""`Client`: create a Run, follow its output live, hand back its Result."""

from __future__ import annotations

import math
import os
import time
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Dict, Generator, Iterator, Optional, Union

from ._kube import KubeApi, LogIdle, LogUnavailable, PodGone, injected_container
from ._records import OutputAssembler
from ._result import Output, Result, build_result, is_terminal, phase_of
from ._spec import (
    DEFAULT_WAIT_MARGIN_SECONDS,
    Program,
    RunOptions,
    check_label,
    check_subdomain,
    run_manifest,
    split_options,
)
from .errors import ConfigError, KruntimesError, RunNotFound, RunTimeout

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["CANCEL_WAIT_SECONDS", "DEFAULT_WAIT_MARGIN_SECONDS", "Client", "RunRef"]

CANCEL_WAIT_SECONDS = 60.0
"""How long the client waits for a cancelled Run to reach its terminal phase: runtimed
stops the process within its grace period and the controller writes the phase."""

WATCH_WINDOW_SECONDS = 60
"""Longest single watch of a Run; then the client reads it again and watches anew."""

LOG_IDLE_SECONDS = 2.0
"""After this long without a log line, the client checks whether the Run ended."""

END_GRACE_SECONDS = 2.0
"""How long the client keeps reading the log once the Run is terminal without both
end-of-stream records, before it takes what it has (and the status tails)."""

LOG_SINCE_MARGIN_SECONDS = 10
"""The log is read from this long before the Run started, so that a clock difference
between the client and the node loses no line (duplicates are dropped by offset)."""

RECONNECT_DELAY_SECONDS = 0.5
"""Pause before reopening a log stream that the server closed."""

Item = Union[Output, Result]
ItemStream = Generator[Item, None, None]
"""What `stream` and `follow` return: a generator, so that `close()` ends it early."""


@dataclass(frozen=True)
class RunRef:
    """A Run this client created."""

    name: str
    uid: str
    namespace: str


class _DeadlinePassed(Exception):
    pass


def _monotonic_deadline(seconds: Optional[float]) -> Optional[float]:
    return None if seconds is None else time.monotonic() + seconds


def _parse_time(value: object) -> Optional[datetime]:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class Client:
    """Runs programs in the warm pods of kruntimes Runtimes, through the Kubernetes API.

    `namespace` defaults to the kubeconfig context's namespace (else `default`);
    `kubeconfig` to `$KUBECONFIG` or `~/.kube/config`; in a pod without either, the
    pod's service account is used. `api_client` replaces all three with a configured
    `kubernetes.client.ApiClient`.
    """

    def __init__(
        self,
        namespace: Optional[str] = None,
        kubeconfig: Optional[str] = None,
        context: Optional[str] = None,
        *,
        api_client: Any = None,
    ) -> None:
        from kubernetes import client as k8s

        if api_client is None:
            api_client, default_namespace = _load_config(kubeconfig, context)
        else:
            default_namespace = "default"
        namespace = check_label("metadata.namespace", namespace or default_namespace)
        server = str(getattr(api_client.configuration, "host", "the API server"))
        self._api = KubeApi(
            namespace, k8s.CustomObjectsApi(api_client), k8s.CoreV1Api(api_client), server
        )

    @classmethod
    def _with_api(cls, api: KubeApi) -> "Client":
        """A client over prepared API calls (the tests' fakes)."""
        self = cls.__new__(cls)
        self._api = api
        return self

    @property
    def namespace(self) -> str:
        return self._api.namespace

    # --- creating and cancelling ------------------------------------------------------

    def submit(self, runtime: str, **program: Unpack[Program]) -> RunRef:
        """Creates the Run and returns at once (see `run` for the arguments)."""
        return self._create(run_manifest(runtime, **program))

    def _create(self, manifest: Dict[str, Any]) -> RunRef:
        created = self._api.create_run(manifest)
        metadata = created.get("metadata") or {}
        return RunRef(str(metadata.get("name", "")), str(metadata.get("uid", "")), self.namespace)

    def cancel(self, name: str) -> None:
        """Sets `spec.cancel: true` on the Run (it ends `Cancelled` unless already over)."""
        self._api.cancel_run(check_subdomain("metadata.name", name))

    def cancel_and_wait(self, name: str, wait: Optional[float] = None) -> Optional[str]:
        """Cancels the Run and waits up to `wait` seconds (default CANCEL_WAIT_SECONDS)
        for its terminal phase; the last phase seen."""
        try:
            self.cancel(name)
        except RunNotFound:
            return None
        try:
            limit = CANCEL_WAIT_SECONDS if wait is None else wait
            run = self._wait_until(name, is_terminal, _monotonic_deadline(limit))
        except _DeadlinePassed as passed:
            run = passed.args[0]
        return phase_of(run)

    def result(self, name: str) -> Result:
        """The Result of a finished Run from its status (the output tails); the Run's
        current state when it has not finished (`phase` is then not terminal)."""
        return build_result(self._api.get_run(check_subdomain("metadata.name", name)), None)

    # --- running ----------------------------------------------------------------------

    def run(self, runtime: str, **options: Unpack[RunOptions]) -> Result:
        """Runs a program in a warm pod of `runtime` and returns its Result.

        The program is a `script` (`interpreter` "bash", the default, or "python") or a
        `command` (an argv, interpreter "exec"), with `args` after it. `input` (any JSON)
        reaches it on stdin and as the file `$KRT_INPUT_FILE`; `env` adds variables.
        `timeout` (whole seconds, 1 to 86400) is the Run's own time limit: past it the
        Run ends `TimedOut`. The client waits at most `wait_timeout` seconds (default:
        `timeout` + DEFAULT_WAIT_MARGIN_SECONDS; without a timeout, until the Run ends);
        then it cancels the Run and raises RunTimeout. KeyboardInterrupt cancels the Run,
        waits for it to end, and is raised again.
        """
        for item in self.stream(runtime, **options):
            if isinstance(item, Result):
                return item
        raise KruntimesError("the output stream ended without a result")  # pragma: no cover

    def stream(self, runtime: str, **options: Unpack[RunOptions]) -> ItemStream:
        """Like `run`, but yields the output as it comes (`Output` items, stdout and
        stderr in the order they arrive) and the `Result` last.

        The Run is created before this returns. Leaving the loop before the Result
        (break, an exception, KeyboardInterrupt) cancels the Run and waits for it to end.
        """
        program, wait_timeout = split_options(options)
        ref = self.submit(runtime, **program)
        return self.follow(ref, wait_timeout=wait_timeout)

    def follow(self, ref: RunRef, *, wait_timeout: Optional[float] = None) -> ItemStream:
        """The output and Result of a Run created with `submit` (see `stream`)."""
        if wait_timeout is not None and not wait_timeout > 0:
            raise ValueError("wait_timeout must be a positive number of seconds")
        return self._owned_stream(ref, wait_timeout)

    def _owned_stream(self, ref: RunRef, wait_timeout: Optional[float]) -> ItemStream:
        finished = False
        try:
            for item in self._follow(ref, _monotonic_deadline(wait_timeout)):
                if isinstance(item, Result):
                    finished = True
                yield item
        except _DeadlinePassed:
            phase = self._cancel_quietly(ref.name, wait=True)
            raise RunTimeout(ref.name, float(wait_timeout or 0), phase) from None
        except KruntimesError:
            # The client cannot follow the Run any more: do not leave it running unseen.
            self._cancel_quietly(ref.name, wait=False)
            raise
        except (KeyboardInterrupt, GeneratorExit):
            if not finished:
                self._cancel_quietly(ref.name, wait=True)
            raise

    def _cancel_quietly(self, name: str, *, wait: bool) -> Optional[str]:
        """Cancels the Run (and waits for its end) while another error is on its way:
        a failure here must not replace that error. The last phase seen, if any."""
        try:
            if wait:
                return self.cancel_and_wait(name)
            self._api.cancel_run(name)
        except KruntimesError:
            pass
        return None

    # --- following --------------------------------------------------------------------

    def _follow(self, ref: RunRef, deadline: Optional[float]) -> Iterator[Item]:
        run = self._wait_until(
            ref.name, lambda r: bool(_pod_of(r)) or is_terminal(r), deadline
        )
        # Records name runtimed's execution id, which is the Run's uid.
        execution = (run.get("status") or {}).get("executionId")
        assembler = OutputAssembler(execution if isinstance(execution, str) and execution
                                    else ref.uid)
        pod = _pod_of(run)
        if pod:
            yield from self._read_log(ref, run, pod, assembler, deadline)
        run = self._wait_until(ref.name, is_terminal, deadline)
        yield build_result(run, assembler)

    def _wait_until(
        self, name: str, done: Callable[[Dict[str, Any]], bool], deadline: Optional[float]
    ) -> Dict[str, Any]:
        """The Run once `done` holds for it; _DeadlinePassed(run) past the deadline."""
        run = self._api.get_run(name)
        while not done(run):
            window = WATCH_WINDOW_SECONDS
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _DeadlinePassed(run)
                window = max(1, min(window, math.ceil(remaining)))
            version = (run.get("metadata") or {}).get("resourceVersion")
            for changed in self._api.watch_run(name, version, window):
                run = changed
                if done(run):
                    return run
            # The window ended or the watch broke off: read the Run again.
            run = self._api.get_run(name)
        return run

    def _container(self, run: Dict[str, Any], pod: str) -> Optional[str]:
        """The container whose log holds the Run's records; None when the pod is gone."""
        found = self._api.pod_containers(pod)
        if found is None:
            return None
        annotations, containers = found
        container = injected_container(annotations)
        if container:
            return container
        runtime_name = ((run.get("spec") or {}).get("runtimeRef") or {}).get("name")
        runtime = self._api.get_runtime(runtime_name) if runtime_name else None
        configured = ((runtime or {}).get("spec") or {}).get("container")
        if isinstance(configured, str) and configured:
            return configured
        return containers[0] if containers else None

    def _read_log(
        self, ref: RunRef, run: Dict[str, Any], pod: str, assembler: OutputAssembler,
        deadline: Optional[float],
    ) -> Iterator[Output]:
        """Follows the pod's log until both streams of the Run ended, or the Run ended
        without them (END_GRACE_SECONDS), or the pod is gone."""
        container = self._container(run, pod)
        if container is None:
            return
        watch = _EndWatch(self._api, ref.name, deadline)
        while True:
            since = _since_seconds(run)
            ended = False
            try:
                # closing(): leaving the loop ends the follow request at once.
                with closing(self._api.pod_log(pod, container, since, LOG_IDLE_SECONDS)) as lines:
                    ended = yield from self._take(lines, assembler, watch)
                if assembler.ended:
                    return
                if not ended:
                    time.sleep(RECONNECT_DELAY_SECONDS)
            except LogIdle:
                pass
            except LogUnavailable:
                # Not served now; the Run's state below says whether to wait for it.
                time.sleep(RECONNECT_DELAY_SECONDS)
            except PodGone:
                return
            if ended or watch.over():
                yield from self._final_read(pod, container, since, assembler)
                return
            run = watch.run or run

    @staticmethod
    def _take(
        lines: Iterator[bytes], assembler: OutputAssembler, watch: "_EndWatch"
    ) -> Generator[Output, None, bool]:
        """Hands on the Run's new output from `lines` until both its streams ended, or
        until it is over without them (then True)."""
        for line in lines:
            chunk = assembler.feed_line(line)
            if chunk is not None:
                yield Output(chunk.stream, chunk.data)
            if assembler.ended:
                return False
            # Other Runs' lines keep the stream busy: check this one now and then.
            if watch.due() and watch.over():
                return True
        return False

    def _final_read(
        self, pod: str, container: str, since: Optional[int], assembler: OutputAssembler
    ) -> Iterator[Output]:
        """One read of the log without following, for records written before the end."""
        try:
            with closing(self._api.pod_log(pod, container, since, LOG_IDLE_SECONDS,
                                           follow=False)) as lines:
                for line in lines:
                    chunk = assembler.feed_line(line)
                    if chunk is not None:
                        yield Output(chunk.stream, chunk.data)
        except (LogIdle, LogUnavailable, PodGone):
            return


class _EndWatch:
    """Whether a followed Run ended without both end-of-stream records (for longer than
    END_GRACE_SECONDS); raises _DeadlinePassed past the client's deadline."""

    def __init__(self, api: KubeApi, name: str, deadline: Optional[float]) -> None:
        self._api = api
        self._name = name
        self._deadline = deadline
        self._checked = time.monotonic()
        self._terminal_since: Optional[float] = None
        self.run: Optional[Dict[str, Any]] = None

    def due(self) -> bool:
        return time.monotonic() - self._checked >= LOG_IDLE_SECONDS

    def over(self) -> bool:
        now = time.monotonic()
        self._checked = now
        self.run = self._api.get_run(self._name)
        if self._deadline is not None and now >= self._deadline:
            raise _DeadlinePassed(self.run)
        if not is_terminal(self.run):
            return False
        if self._terminal_since is None:
            self._terminal_since = now
        return now - self._terminal_since >= END_GRACE_SECONDS


def _pod_of(run: Dict[str, Any]) -> Optional[str]:
    pod = (run.get("status") or {}).get("pod")
    return pod if isinstance(pod, str) and pod else None


def _since_seconds(run: Dict[str, Any]) -> Optional[int]:
    """How far back to read the log: from a little before the Run was queued."""
    status = run.get("status") or {}
    metadata = run.get("metadata") or {}
    started = _parse_time(status.get("queuedAt")) or _parse_time(metadata.get("creationTimestamp"))
    if started is None:
        return None
    age = (datetime.now(timezone.utc) - started).total_seconds()
    return max(1, math.ceil(age) + LOG_SINCE_MARGIN_SECONDS)


def _load_config(kubeconfig: Optional[str], context: Optional[str]) -> tuple[Any, str]:
    """An ApiClient and the default namespace, as kubectl finds them."""
    from kubernetes import config as config_module

    # The config helpers have no type hints.
    k8s_config: Any = config_module
    path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    path = path.split(os.pathsep)[0]
    in_cluster = kubeconfig is None and not os.path.exists(path) and os.environ.get(
        "KUBERNETES_SERVICE_HOST"
    )
    try:
        if in_cluster:
            configuration = _in_cluster_configuration(k8s_config)
            from kubernetes import client as k8s

            return k8s.ApiClient(configuration), _in_cluster_namespace()
        if not os.path.exists(path):
            raise ConfigError(
                f"no kubeconfig at {path}: pass kubeconfig=..., set KUBECONFIG, or run in a pod"
            )
        contexts, active = k8s_config.list_kube_config_contexts(config_file=path)
        chosen = active
        if context is not None:
            chosen = next((c for c in contexts if c.get("name") == context), None)
            if chosen is None:
                names = ", ".join(str(c.get("name")) for c in contexts) or "none"
                raise ConfigError(f"no context {context!r} in {path} (contexts: {names})")
        namespace = str(((chosen or {}).get("context") or {}).get("namespace") or "default")
        api_client = k8s_config.new_client_from_config(config_file=path, context=context)
        return api_client, namespace
    except k8s_config.ConfigException as exc:
        raise ConfigError(f"kubeconfig {path}: {exc}") from None


def _in_cluster_configuration(k8s_config: Any) -> Any:
    from kubernetes import client as k8s

    configuration = k8s.Configuration()
    k8s_config.load_incluster_config(client_configuration=configuration)
    return configuration


def _in_cluster_namespace() -> str:
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"
