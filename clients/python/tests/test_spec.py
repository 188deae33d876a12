"""The client's own checks of a Run, each at its boundary, and the manifest they build."""

from __future__ import annotations

from typing import Any

import pytest

from kruntimes import InvalidRun
from kruntimes._spec import (
    MAX_COMMAND_ENTRIES,
    MAX_ENV_ENTRIES,
    MAX_SCRIPT_BYTES,
    MAX_TIMEOUT_SECONDS,
    run_manifest,
)


def manifest(runtime: str = "bash", **kwargs: Any) -> dict[str, Any]:
    fields: dict[str, Any] = dict(
        name=None, interpreter=None, script=None, command=None, args=None, input=None,
        env=None, timeout=None, labels=None,
    )
    fields.update(kwargs)
    return run_manifest(runtime, **fields)


def refused(field: str, **kwargs: Any) -> InvalidRun:
    with pytest.raises(InvalidRun) as caught:
        manifest(**kwargs)
    assert caught.value.field == field, caught.value
    return caught.value


def test_a_script_defaults_to_bash_and_a_command_to_exec() -> None:
    body = manifest(script="echo hi")
    assert body["spec"] == {"runtimeRef": {"name": "bash"}, "interpreter": "bash",
                            "script": "echo hi"}
    assert body["metadata"] == {"generateName": "bash-"}
    assert body["apiVersion"] == "kruntimes.io/v1alpha1" and body["kind"] == "Run"
    assert manifest(command=["uname", "-a"])["spec"]["interpreter"] == "exec"


def test_every_field_reaches_the_manifest() -> None:
    body = manifest(
        "py", name="job-1", interpreter="python", script="print(1)", args=["a"],
        input={"n": 1}, env={"MODE": "dev"}, timeout=30, labels={"team": "a"},
    )
    assert body["metadata"] == {"name": "job-1", "labels": {"team": "a"}}
    assert body["spec"] == {
        "runtimeRef": {"name": "py"}, "interpreter": "python", "script": "print(1)",
        "args": ["a"], "input": {"n": 1}, "env": [{"name": "MODE", "value": "dev"}],
        "timeout": "30s",
    }


def test_interpreter_and_program_source_must_agree() -> None:
    refused("spec.script")
    refused("spec.command", script="x", command=["x"])
    refused("spec.interpreter", command=["ls"], interpreter="python")
    refused("spec.script", script="echo", interpreter="exec")
    refused("spec.interpreter", script="echo", interpreter="ruby")
    refused("spec.script", script="")


def test_names_are_checked() -> None:
    assert "DNS-1123 label" in refused("spec.runtimeRef.name", runtime="Bash", script="x").reason
    refused("spec.runtimeRef.name", runtime="a" * 64, script="x")
    manifest("a" * 63, script="x")
    refused("metadata.name", name="bad_name", script="x")
    refused("metadata.name", name="a" * 254, script="x")
    manifest(name="a.b-c", script="x")


def test_script_size_limit() -> None:
    manifest(script="x" * MAX_SCRIPT_BYTES)
    refused("spec.script", script="x" * (MAX_SCRIPT_BYTES + 1))
    # Bytes, not characters: a 2-byte character at the limit is over it.
    refused("spec.script", script="x" * (MAX_SCRIPT_BYTES - 1) + "é")


def test_command_and_args_limits() -> None:
    manifest(command=["x"] * MAX_COMMAND_ENTRIES)
    refused("spec.command", command=["x"] * (MAX_COMMAND_ENTRIES + 1))
    refused("spec.command", command=[])
    refused("spec.command", command=[""])
    refused("spec.command", command="ls -l")
    refused("spec.command[1]", command=["ls", "a\x00b"])
    refused("spec.command[1]", command=["ls", 3])
    refused("spec.args[0]", script="x", args=["y" * 32769])
    manifest(script="x", args=["y" * 32768])


def test_env_rules() -> None:
    manifest(script="x", env={f"V{i}": "" for i in range(MAX_ENV_ENTRIES)})
    refused("spec.env", script="x", env={f"V{i}": "" for i in range(MAX_ENV_ENTRIES + 1)})
    refused("spec.env[0].name", script="x", env={"1X": "v"})
    refused("spec.env[1].name", script="x", env={"OK": "v", "KRT_INPUT_FILE": "v"})
    refused("spec.env[0].value", script="x", env={"A": "a\x00"})
    refused("spec.env", script="x", env=[("A", "b")])


def test_timeout_bounds() -> None:
    assert manifest(script="x", timeout=1)["spec"]["timeout"] == "1s"
    assert manifest(script="x", timeout=2.0)["spec"]["timeout"] == "2s"
    assert manifest(script="x", timeout=MAX_TIMEOUT_SECONDS)["spec"]["timeout"] == "86400s"
    refused("spec.timeout", script="x", timeout=0)
    refused("spec.timeout", script="x", timeout=MAX_TIMEOUT_SECONDS + 1)
    refused("spec.timeout", script="x", timeout=1.5)
    refused("spec.timeout", script="x", timeout=float("nan"))
    refused("spec.timeout", script="x", timeout=True)
    refused("spec.timeout", script="x", timeout="10s")


def test_input_must_be_json() -> None:
    assert manifest(script="x", input=[1, "a", None])["spec"]["input"] == [1, "a", None]
    refused("spec.input", script="x", input={"x": object()})
    refused("spec.input", script="x", input=float("inf"))


def test_an_unknown_argument_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="scirpt"):
        run_manifest("bash", scirpt="echo")  # type: ignore[call-arg]
