"""The client against the emulated cluster: Runs created through the Kubernetes API,
dispatched by the controller to warm pods, output read live from the pods' logs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, List, Tuple

import pytest
import yaml
from kubernetes import client as k8s

from kruntimes import (
    AsyncClient,
    Client,
    Forbidden,
    InvalidRun,
    Output,
    Result,
    RunNotFound,
    RunTimeout,
    Unauthorized,
)

from conftest import Cluster, runtime_manifest

TERMINAL = ("Succeeded", "Failed", "TimedOut", "Cancelled", "Error")


@pytest.fixture
def client(cluster: Cluster) -> Client:
    return Client(namespace=cluster.namespace, kubeconfig=cluster.kubeconfig)


def run_object(cluster: Cluster, name: str) -> Any:
    return cluster.custom().get_namespaced_custom_object(
        "kruntimes.io", "v1alpha1", cluster.namespace, "runs", name)


def wait_for(what: str, check: Any, seconds: float = 90.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def test_a_bash_script_gives_stdout_stderr_and_exit_code(client: Client, cluster: Cluster
                                                          ) -> None:
    result = client.run(cluster.runtime, script="echo out; echo err >&2; printf 'é\\n'")
    assert (result.phase, result.exit_code) == ("Succeeded", 0), result
    assert (result.stdout, result.stderr) == ("out\né\n", "err\n")
    assert not result.tails and not result.truncated
    assert run_object(cluster, result.run_name)["status"]["phase"] == "Succeeded"


def test_a_python_script_with_input_env_and_args(client: Client, cluster: Cluster) -> None:
    script = textwrap.dedent("""\
        import json, os, sys
        data = json.load(sys.stdin)
        print(data["n"] * 2, os.environ["MODE"], sys.argv[1:])
    """)
    result = client.run(cluster.runtime, interpreter="python", script=script,
                        input={"n": 21}, env={"MODE": "dev"}, args=["a", "b"])
    assert (result.phase, result.stdout) == ("Succeeded", "42 dev ['a', 'b']\n"), result


def test_a_command_runs_without_an_interpreter(client: Client, cluster: Cluster) -> None:
    result = client.run(cluster.runtime, command=["printf", "%s|", "a b", "c"])
    assert (result.phase, result.stdout) == ("Succeeded", "a b|c|"), result


def test_a_failing_program_gives_its_exit_code(client: Client, cluster: Cluster) -> None:
    result = client.run(cluster.runtime, script="echo doomed >&2; exit 3")
    assert (result.phase, result.exit_code, result.stderr) == ("Failed", 3, "doomed\n"), result
    assert not result.ok


def test_the_runs_timeout_ends_it_timed_out(client: Client, cluster: Cluster) -> None:
    started = time.monotonic()
    result = client.run(cluster.runtime, script="echo started; sleep 60", timeout=2)
    assert result.phase == "TimedOut", result
    assert result.stdout == "started\n"
    assert time.monotonic() - started < 30


def test_stream_yields_lines_in_order_while_the_run_runs(client: Client, cluster: Cluster
                                                          ) -> None:
    script = "for i in 1 2 3 4; do echo line $i; echo err $i >&2; sleep 0.5; done"
    ref = client.submit(cluster.runtime, script=script)
    seen: List[Tuple[str, bytes, str]] = []
    results: List[Result] = []
    for item in client.follow(ref):
        if isinstance(item, Output):
            phase = str(run_object(cluster, ref.name)["status"]["phase"])
            seen.append((item.stream, item.data, phase))
        else:
            results.append(item)
    assert len(results) == 1 and results[0].phase == "Succeeded", results
    stdout = b"".join(data for stream, data, _ in seen if stream == "stdout")
    stderr = b"".join(data for stream, data, _ in seen if stream == "stderr")
    assert stdout == b"line 1\nline 2\nline 3\nline 4\n"
    assert stderr == b"err 1\nerr 2\nerr 3\nerr 4\n"
    # The first lines arrived while the Run was still running, not at its end.
    assert seen[0][2] not in TERMINAL, seen
    assert (results[0].stdout, results[0].tails) == (stdout.decode(), False)


def test_the_wait_timeout_cancels_the_run(client: Client, cluster: Cluster) -> None:
    with pytest.raises(RunTimeout) as caught:
        client.run(cluster.runtime, script="sleep 60", wait_timeout=3)
    assert caught.value.phase == "Cancelled", caught.value
    assert run_object(cluster, caught.value.run_name)["status"]["phase"] == "Cancelled"


def test_keyboard_interrupt_cancels_the_run(cluster: Cluster) -> None:
    program = textwrap.dedent(f"""\
        import kruntimes
        client = kruntimes.Client(namespace={cluster.namespace!r},
                                  kubeconfig={cluster.kubeconfig!r})
        client.run({cluster.runtime!r}, script="sleep 60", labels={{"case": "sigint"}})
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    process = subprocess.Popen([sys.executable, "-c", program], env=env,
                               stderr=subprocess.PIPE)
    custom = cluster.custom()

    def running() -> Any:
        runs = custom.list_namespaced_custom_object(
            "kruntimes.io", "v1alpha1", cluster.namespace, "runs",
            label_selector="case=sigint")["items"]
        return runs and (runs[0].get("status") or {}).get("phase") == "Running" and runs[0]

    run = wait_for("the Run running", running)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=90)
    assert b"KeyboardInterrupt" in stderr, stderr
    assert run_object(cluster, run["metadata"]["name"])["status"]["phase"] == "Cancelled"


def test_an_invalid_run_is_refused_naming_the_field(client: Client, cluster: Cluster) -> None:
    # By the client, before anything is sent.
    with pytest.raises(InvalidRun) as caught:
        client.run(cluster.runtime, command=["ls"], interpreter="bash")
    assert caught.value.field == "spec.interpreter"
    # By the webhook, against the Runtime: an input its schema refuses.
    custom = cluster.custom()
    strict = runtime_manifest("strict", 0, 1)
    strict["spec"]["inputSchema"] = {"type": "object", "required": ["n"]}
    strict["spec"]["limits"] = {"maxTimeout": "10s"}
    custom.create_namespaced_custom_object(
        "kruntimes.io", "v1alpha1", cluster.namespace, "runtimes", strict)
    with pytest.raises(InvalidRun) as caught:
        client.run("strict", script="echo", input={"m": 1})
    assert caught.value.field == "spec.input", caught.value
    assert "denied the request" in caught.value.reason
    with pytest.raises(InvalidRun) as caught:
        client.run("strict", script="echo", input={"n": 1}, timeout=60)
    assert caught.value.field == "spec.timeout", caught.value


def test_a_missing_run_is_run_not_found(client: Client) -> None:
    with pytest.raises(RunNotFound):
        client.result("no-such-run")


def test_refused_credentials_are_unauthorized(cluster: Cluster, tmp_path: Path) -> None:
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    for user in config["users"]:
        user["user"] = {"token": "not-a-token"}
    bogus = tmp_path / "kubeconfig"
    bogus.write_text(yaml.safe_dump(config))
    with pytest.raises(Unauthorized):
        Client(namespace=cluster.namespace, kubeconfig=str(bogus)).run(
            cluster.runtime, script="echo")


def test_a_403_is_forbidden_naming_verb_resource_and_namespace(cluster: Cluster) -> None:
    # The emulated API server has no RBAC; it answers 403 to a create in a Terminating
    # namespace, which a ConfigMap with a finalizer keeps Terminating.
    core: Any = k8s.CoreV1Api(cluster.admin)
    core.create_namespace({"metadata": {"name": "closing"}})
    core.create_namespaced_config_map("closing", {"metadata": {
        "name": "held", "finalizers": ["example.com/hold"]}})
    core.delete_namespace("closing")
    client = Client(namespace="closing", kubeconfig=cluster.kubeconfig)
    with pytest.raises(Forbidden) as caught:
        client.run(cluster.runtime, script="echo")
    assert (caught.value.verb, caught.value.resource, caught.value.namespace) == (
        "create", "runs", "closing")
    assert "closing" in str(caught.value)


def test_the_async_client_runs_and_streams(cluster: Cluster) -> None:
    client = AsyncClient(namespace=cluster.namespace, kubeconfig=cluster.kubeconfig)

    async def both() -> Tuple[Result, List[Any]]:
        result = await client.run(cluster.runtime, script="echo async")
        items = [item async for item in client.stream(cluster.runtime, script="echo a; echo b")]
        return result, items

    result, items = asyncio.run(both())
    assert (result.phase, result.stdout) == ("Succeeded", "async\n"), result
    outputs = b"".join(i.data for i in items if isinstance(i, Output))
    assert outputs == b"a\nb\n"
    assert isinstance(items[-1], Result) and items[-1].phase == "Succeeded"


def test_runs_sharing_a_pod_each_get_only_their_own_output(cluster: Cluster) -> None:
    # 4 Runs at once on 2 pods of concurrency 4: their records interleave in the same
    # container logs, and each reader keeps its own Run's.
    client = AsyncClient(namespace=cluster.namespace, kubeconfig=cluster.kubeconfig)
    script = "for i in $(seq 1 20); do echo $MARK $i; echo $MARK err $i >&2; sleep 0.05; done"

    async def all_at_once() -> List[Result]:
        return list(await asyncio.gather(*(
            client.run(cluster.runtime, script=script, env={"MARK": f"run{n}"})
            for n in range(4))))

    for n, result in enumerate(asyncio.run(all_at_once())):
        assert (result.phase, result.tails) == ("Succeeded", False), result
        assert result.stdout == "".join(f"run{n} {i}\n" for i in range(1, 21))
        assert result.stderr == "".join(f"run{n} err {i}\n" for i in range(1, 21))


def test_the_readme_example_runs_as_written(cluster: Cluster,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    example = readme.split("## Example", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    # Only where it points: this cluster's kubeconfig, namespace and Runtime.
    where = f"namespace={cluster.namespace!r}, kubeconfig={cluster.kubeconfig!r}"
    assert 'namespace="team-a"' in example and 'client.run("python",' in example
    example = example.replace('namespace="team-a"', where)
    example = example.replace('client.run("python",', f"client.run({cluster.runtime!r},")
    exec(compile(example, "README.md example", "exec"), {})
    assert capsys.readouterr().out == "42\n"
