"""Finding the cluster as kubectl does: kubeconfig, context, its namespace; and the
errors when there is none or it does not answer."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from kruntimes import Client, ClusterUnreachable, ConfigError, InvalidRun


def kubeconfig(tmp_path: Path, server: str, namespace: str = "team-a") -> str:
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "main",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [
            {"name": "main", "context": {"cluster": "c", "user": "u", "namespace": namespace}},
            {"name": "other", "context": {"cluster": "c", "user": "u"}},
        ],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_namespace_comes_from_the_context(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, "https://127.0.0.1:1")
    assert Client(kubeconfig=path).namespace == "team-a"
    assert Client(kubeconfig=path, context="other").namespace == "default"
    assert Client(kubeconfig=path, namespace="mine").namespace == "mine"


def test_kubeconfig_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    monkeypatch.setenv("KUBECONFIG", kubeconfig(tmp_path, "https://127.0.0.1:1", "from-env"))
    assert Client().namespace == "from-env"


def test_a_missing_kubeconfig_says_what_to_do(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError, match="no kubeconfig at .*KUBECONFIG"):
        Client(kubeconfig=str(tmp_path / "nope"))


def test_an_unknown_context_lists_the_contexts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="main, other"):
        Client(kubeconfig=kubeconfig(tmp_path, "https://127.0.0.1:1"), context="prod")


def test_a_bad_namespace_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidRun) as caught:
        Client(kubeconfig=kubeconfig(tmp_path, "https://127.0.0.1:1"), namespace="Team_A")
    assert caught.value.field == "metadata.namespace"


def test_a_server_that_does_not_answer_is_cluster_unreachable(tmp_path: Path) -> None:
    server = f"https://127.0.0.1:{closed_port()}"
    client = Client(kubeconfig=kubeconfig(tmp_path, server))
    with pytest.raises(ClusterUnreachable) as caught:
        client.run("bash", script="echo")
    assert caught.value.server == server
