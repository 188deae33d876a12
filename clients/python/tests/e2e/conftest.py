"""The emulated cluster for the end-to-end tests: `kruntimes-test-cluster --install` of
the build in `$KRUNTIMES_BIN_DIR` (default `<repo>/target/debug`), started once for the
session, with a namespace enforcing Pod Security `restricted` and a ready Runtime.

The emulated node needs root; as another user every test here is skipped with that
reason (reported as skipped, never as passed).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest
from kubernetes import client as k8s
from kubernetes import config as config_module

# The kubernetes config helpers have no type hints.
k8s_config: Any = config_module

REPO = Path(__file__).resolve().parents[4]

READY_TIMEOUT_SECONDS = 120.0
"""How long the cluster may take to print `ready`, and a Runtime to become ready: a
debug build on a loaded two-core machine starts the webhook and the controller slowly.
Both together stay below pytest-timeout's 300 s, which counts the session fixture's
set-up in the first test's time, so that a slow start fails with its own message."""

STOP_TIMEOUT_SECONDS = 60.0
"""How long the cluster may take to stop after SIGTERM (its components' grace, then
every Pod's)."""

NAMESPACE = "python-client"
RUNTIME = "bash"
RUNTIME_REPLICAS = 2


@dataclass
class Cluster:
    kubeconfig: str
    server: str
    namespace: str
    runtime: str
    dir: Path
    admin: Any

    def custom(self) -> Any:
        return k8s.CustomObjectsApi(self.admin)


def _binary() -> Path:
    bin_dir = Path(os.environ.get("KRUNTIMES_BIN_DIR") or REPO / "target" / "debug")
    path = bin_dir / "kruntimes-test-cluster"
    if not path.is_file():
        pytest.fail(
            f"{path} does not exist: build it (cargo build -p kruntimes-e2e --bins) or set "
            "KRUNTIMES_BIN_DIR to the directory that holds it and runtimed"
        )
    return path


def _read_ready(process: subprocess.Popen[bytes], log: Path) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        readable, _, _ = select.select([process.stdout], [], [], 1.0)
        if readable:
            line = process.stdout.readline().decode()
            if line.startswith("ready "):
                return line
            pytest.fail(f"kruntimes-test-cluster: {line!r}; its log: {log}")
        if process.poll() is not None:
            pytest.fail(f"kruntimes-test-cluster exited {process.returncode}; its log: {log}")
    pytest.fail(f"kruntimes-test-cluster not ready after {READY_TIMEOUT_SECONDS}s; log: {log}")


def runtime_manifest(name: str, replicas: int, concurrency: int) -> Dict[str, Any]:
    """A Runtime whose pods pass Pod Security `restricted` (as the Rust suite's)."""
    return {
        "apiVersion": "kruntimes.io/v1alpha1", "kind": "Runtime",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas, "concurrency": concurrency,
            "template": {"spec": {
                "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{"name": "main", "image": "debian:trixie-slim",
                                "securityContext": {"allowPrivilegeEscalation": False,
                                                    "capabilities": {"drop": ["ALL"]}}}],
            }},
        },
    }


def _wait_ready(custom: Any, namespace: str, name: str, replicas: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        runtime = custom.get_namespaced_custom_object(
            "kruntimes.io", "v1alpha1", namespace, "runtimes", name)
        if (runtime.get("status") or {}).get("readyReplicas") == replicas:
            return
        time.sleep(0.2)
    pytest.fail(f"Runtime {name} not ready after {READY_TIMEOUT_SECONDS}s: {runtime}")


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.skip("needs root: the emulated cluster runs Pods as processes in namespaces "
                    "of their own")
    binary = _binary()
    work = Path(tempfile.mkdtemp(prefix="krt-python-e2e-"))
    log = work / "test-cluster.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            [str(binary), "--dir", str(work / "cluster"), "--install", "--repo", str(REPO)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
        )
    try:
        line = _read_ready(process, log)
        fields = dict(part.split("=", 1) for part in line.split()[1:])
        kubeconfig = fields["kubeconfig"]
        admin = k8s_config.new_client_from_config(config_file=kubeconfig)
        core: Any = k8s.CoreV1Api(admin)
        core.create_namespace({"metadata": {
            "name": NAMESPACE, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
        custom = k8s.CustomObjectsApi(admin)
        custom.create_namespaced_custom_object(
            "kruntimes.io", "v1alpha1", NAMESPACE, "runtimes",
            runtime_manifest(RUNTIME, RUNTIME_REPLICAS, 4))
        _wait_ready(custom, NAMESPACE, RUNTIME, RUNTIME_REPLICAS)
        yield Cluster(kubeconfig, fields["server"], NAMESPACE, RUNTIME, work / "cluster", admin)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        assert code == 0, f"kruntimes-test-cluster ended with {code}; its log: {log}"
