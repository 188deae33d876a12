"""The Client's logic over a scripted fake of its Kubernetes calls: following the log,
building the Result, falling back to the status tails, cancelling."""

from __future__ import annotations

import json
import time
from typing import Any, Dict, Generator, Iterator, List, Optional, Tuple

import pytest

from kruntimes import Client, Output, Result, RunTimeout
from kruntimes import KruntimesError
from kruntimes._kube import KubeApi, LogIdle, LogUnavailable, PodGone

UID = "uid-1"
INJECTED = {"kruntimes.io/injection-status": json.dumps({"version": 1, "container": "main"})}


def run_state(phase: Optional[str] = None, pod: Optional[str] = None, **status: Any
              ) -> Dict[str, Any]:
    body: Dict[str, Any] = {"metadata": {"name": "r1", "uid": UID, "resourceVersion": "1"},
                            "spec": {"runtimeRef": {"name": "bash"}}, "status": dict(status)}
    if phase:
        body["status"]["phase"] = phase
    if pod:
        body["status"]["pod"] = pod
    return body


def record(stream: str, offset: int, data: Optional[str] = None, eof: bool = False,
           run: str = UID) -> bytes:
    fields: Dict[str, Any] = {"krt": 1, "run": run, "stream": stream, "offset": offset}
    if eof:
        fields["eof"] = True
    else:
        fields["data"] = data
    return json.dumps(fields).encode()


class FakeKube(KubeApi):
    """Answers get_run with `states` in turn (the last one from then on) and each
    follow of the log with the next entry of `logs` (lines, then how the stream ends)."""

    def __init__(self, states: List[Dict[str, Any]],
                 logs: Optional[List[Tuple[List[bytes], str]]] = None,
                 containers: Optional[Tuple[Dict[str, str], List[str]]] = (INJECTED, ["main"])
                 ) -> None:
        super().__init__("team-a", None, None, "https://fake")
        self.states = states
        self.logs = logs or []
        self.containers = containers
        self.created: List[Dict[str, Any]] = []
        self.cancelled = 0
        self.log_calls: List[Tuple[str, str, bool]] = []

    def create_run(self, body: Dict[str, Any]) -> Dict[str, Any]:
        self.created.append(body)
        return {"metadata": {"name": "r1", "uid": UID}}

    def get_run(self, name: str) -> Dict[str, Any]:
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        if self.cancelled and state.get("status", {}).get("phase") not in (
                "Succeeded", "Failed", "TimedOut", "Cancelled", "Error"):
            state = run_state("Cancelled", pod="pod-1")
        return state

    def cancel_run(self, name: str) -> None:
        self.cancelled += 1

    def watch_run(self, name: str, resource_version: Optional[str], seconds: int
                  ) -> Iterator[Dict[str, Any]]:
        time.sleep(0.01)
        return iter(())

    def get_runtime(self, name: str) -> Optional[Dict[str, Any]]:
        return None

    def pod_containers(self, pod: str) -> Optional[Tuple[Dict[str, str], List[str]]]:
        return self.containers

    def pod_log(self, pod: str, container: str, since_seconds: Optional[int],
                idle_seconds: float, follow: bool = True) -> Generator[bytes, None, None]:
        self.log_calls.append((pod, container, follow))
        if not self.logs:
            raise LogIdle()
        lines, end = self.logs.pop(0)
        yield from lines
        if end == "idle":
            raise LogIdle()
        if end == "gone":
            raise PodGone()
        if end == "unavailable":
            raise LogUnavailable("waiting to start")


def full_log() -> List[bytes]:
    return [
        b"agent: starting",
        record("stdout", 0, "one\n"),
        record("stdout", 0, "x", run="other-run"),
        record("stderr", 0, "warn\n"),
        record("stdout", 0, "one\n"),  # a duplicate
        record("stdout", 4, "two\n"),
        record("stdout", 8, eof=True),
        record("stderr", 5, eof=True),
    ]


def finished(**status: Any) -> Dict[str, Any]:
    return run_state(pod="pod-1", **status)


def test_run_reads_the_whole_output_from_the_log() -> None:
    api = FakeKube(
        [run_state("Pending"), run_state("Running", pod="pod-1"),
         finished(phase="Succeeded", exitCode=0, output={"stdoutTail": "two\n"})],
        logs=[(full_log(), "idle")],
    )
    result = Client._with_api(api).run("bash", script="echo")
    assert result == Result(run_name="r1", phase="Succeeded", exit_code=0,
                            stdout="one\ntwo\n", stderr="warn\n", truncated=False,
                            reason=None, message=None, tails=False)
    assert result.ok
    assert api.log_calls == [("pod-1", "main", True)]
    assert api.cancelled == 0


def test_stream_yields_each_new_chunk_in_order_then_the_result() -> None:
    api = FakeKube([run_state("Running", pod="pod-1"),
                    finished(phase="Failed", exitCode=3, reason="NonZeroExit")],
                   logs=[(full_log(), "idle")])
    items = list(Client._with_api(api).stream("bash", script="exit 3"))
    assert items[:-1] == [Output("stdout", b"one\n"), Output("stderr", b"warn\n"),
                          Output("stdout", b"two\n")]
    result = items[-1]
    assert isinstance(result, Result)
    assert (result.phase, result.exit_code, result.reason) == ("Failed", 3, "NonZeroExit")


def test_a_reconnect_drops_what_was_already_seen() -> None:
    first = full_log()[:3]
    api = FakeKube([run_state("Running", pod="pod-1"), run_state("Running", pod="pod-1"),
                    finished(phase="Succeeded", exitCode=0)],
                   logs=[(first, "closed"), (full_log(), "idle")])
    items = list(Client._with_api(api).stream("bash", script="echo"))
    outputs = [i for i in items if isinstance(i, Output)]
    assert b"".join(o.data for o in outputs if o.stream == "stdout") == b"one\ntwo\n"
    assert len(api.log_calls) == 2


def test_the_tails_stand_in_when_the_pod_is_gone() -> None:
    api = FakeKube([run_state("Running", pod="pod-1"),
                    finished(phase="Error", reason="PodLost",
                             output={"stdoutTail": "partial", "truncated": True})],
                   containers=None)
    result = Client._with_api(api).run("bash", script="echo")
    assert (result.phase, result.reason, result.stdout, result.tails, result.truncated) == (
        "Error", "PodLost", "partial", True, True)
    assert api.log_calls == []


def test_the_tails_stand_in_when_records_went_missing() -> None:
    gap = [record("stdout", 0, "a"), record("stdout", 5, "f"), record("stdout", 6, eof=True),
           record("stderr", 0, eof=True)]
    api = FakeKube([run_state("Running", pod="pod-1"),
                    finished(phase="Succeeded", exitCode=0, output={"stdoutTail": "abcdef"})],
                   logs=[(gap, "idle")])
    result = Client._with_api(api).run("bash", script="echo")
    assert (result.stdout, result.tails) == ("abcdef", True)


def test_a_run_that_ends_without_end_records_ends_the_follow(monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    import kruntimes.client as module
    monkeypatch.setattr(module, "END_GRACE_SECONDS", 0.0)
    api = FakeKube([run_state("Running", pod="pod-1"),
                    finished(phase="Error", reason="AgentLost", output={"stderrTail": "t"})],
                   logs=[([record("stdout", 0, "so far")], "idle")])
    items = list(Client._with_api(api).stream("bash", script="echo"))
    assert items[0] == Output("stdout", b"so far")
    result = items[-1]
    assert isinstance(result, Result)
    assert (result.phase, result.stderr, result.tails) == ("Error", "t", True)
    # The last read does not follow.
    assert api.log_calls[-1] == ("pod-1", "main", False)


def test_the_container_comes_from_the_pod_when_not_annotated() -> None:
    api = FakeKube([run_state("Running", pod="pod-1"), finished(phase="Succeeded", exitCode=0)],
                   logs=[(full_log(), "idle")], containers=({}, ["app", "runtimed"]))
    Client._with_api(api).run("bash", script="echo")
    assert api.log_calls[0][1] == "app"


def test_a_run_that_ends_before_it_gets_a_pod_gives_its_status() -> None:
    api = FakeKube([finished(phase="Error", reason="RuntimeNotFound", message="no Runtime nope")])
    result = Client._with_api(api).run("nope", script="echo")
    assert (result.phase, result.message, result.tails) == ("Error", "no Runtime nope", True)


def test_past_the_wait_timeout_the_run_is_cancelled_and_run_timeout_raised() -> None:
    api = FakeKube([run_state("Pending")])
    started = time.monotonic()
    with pytest.raises(RunTimeout) as caught:
        Client._with_api(api).run("bash", script="sleep 60", wait_timeout=0.2)
    assert time.monotonic() - started < 5
    assert api.cancelled == 1
    assert (caught.value.run_name, caught.value.phase) == ("r1", "Cancelled")


def test_a_timeout_sets_the_runs_limit_and_a_client_deadline_after_it() -> None:
    api = FakeKube([run_state("Running", pod="pod-1"), finished(phase="TimedOut")],
                   logs=[(full_log(), "idle")])
    result = Client._with_api(api).run("bash", script="sleep 60", timeout=2)
    assert api.created[0]["spec"]["timeout"] == "2s"
    assert result.phase == "TimedOut"


def test_leaving_the_stream_early_cancels_the_run() -> None:
    api = FakeKube([run_state("Running", pod="pod-1")], logs=[(full_log()[:2], "idle")])
    stream = Client._with_api(api).stream("bash", script="sleep 60")
    first = next(stream)
    assert first == Output("stdout", b"one\n")
    stream.close()
    assert api.cancelled == 1


def test_keyboard_interrupt_cancels_the_run_and_is_raised_again() -> None:
    class Interrupting(FakeKube):
        def pod_log(self, *args: Any, **kwargs: Any) -> Generator[bytes, None, None]:
            raise KeyboardInterrupt

    api = Interrupting([run_state("Running", pod="pod-1")])
    with pytest.raises(KeyboardInterrupt):
        Client._with_api(api).run("bash", script="sleep 60")
    assert api.cancelled == 1


def test_the_finished_result_is_not_cancelled() -> None:
    api = FakeKube([run_state("Running", pod="pod-1"), finished(phase="Succeeded", exitCode=0)],
                   logs=[(full_log(), "idle")])
    for _ in Client._with_api(api).stream("bash", script="echo"):
        pass
    assert api.cancelled == 0


def test_without_a_wait_timeout_the_client_waits_timeout_plus_the_margin(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import kruntimes._spec as spec
    monkeypatch.setattr(spec, "DEFAULT_WAIT_MARGIN_SECONDS", 0.5)
    api = FakeKube([run_state("Pending")])
    started = time.monotonic()
    with pytest.raises(RunTimeout) as caught:
        Client._with_api(api).run("bash", script="sleep 60", timeout=1)
    elapsed = time.monotonic() - started
    assert caught.value.waited == 1.5
    assert elapsed >= 1.5, elapsed  # it waited the whole bound, not less


def test_a_cancel_that_never_ends_the_run_is_waited_for_at_most_cancel_wait(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import kruntimes.client as module
    monkeypatch.setattr(module, "CANCEL_WAIT_SECONDS", 0.3)

    class Stuck(FakeKube):
        def cancel_run(self, name: str) -> None:
            self.cancelled_without_effect = True

    api = Stuck([run_state("Pending")])
    started = time.monotonic()
    with pytest.raises(RunTimeout) as caught:
        Client._with_api(api).run("bash", script="sleep 60", wait_timeout=0.2)
    assert caught.value.phase == "Pending"
    assert time.monotonic() - started < 5


def test_a_log_that_cannot_be_served_gives_the_tails(monkeypatch: pytest.MonkeyPatch) -> None:
    import kruntimes.client as module
    monkeypatch.setattr(module, "END_GRACE_SECONDS", 0.0)
    api = FakeKube([run_state("Running", pod="pod-1"),
                    finished(phase="Succeeded", exitCode=0, output={"stdoutTail": "t"})],
                   logs=[([], "unavailable"), ([], "unavailable")])
    result = Client._with_api(api).run("bash", script="echo")
    assert (result.phase, result.stdout, result.tails) == ("Succeeded", "t", True)


def test_a_failing_cancel_does_not_replace_the_keyboard_interrupt() -> None:
    class Broken(FakeKube):
        def pod_log(self, *args: Any, **kwargs: Any) -> Generator[bytes, None, None]:
            raise KeyboardInterrupt

        def cancel_run(self, name: str) -> None:
            raise KruntimesError("the API server went away")

    with pytest.raises(KeyboardInterrupt):
        Client._with_api(Broken([run_state("Running", pod="pod-1")])).run("bash", script="x")
