"""Building a Run manifest, with the checks that are cheap to make before sending it.

The admission webhook remains the authority: these checks catch what can be caught
without the cluster (names, which program source goes with which interpreter, the
documented bounds) so that a mistake is reported before a round trip, naming the field.
"""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Sequence, Tuple, TypedDict, Union, cast

from .errors import InvalidRun

if TYPE_CHECKING:
    # Only in annotations, which `from __future__ import annotations` leaves as strings.
    from typing_extensions import Unpack

GROUP = "kruntimes.io"
VERSION = "v1alpha1"
PLURAL = "runs"

# Bounds of the kruntimes.io/v1alpha1 API (docs/api.md, "Limits"); the cluster checks
# them again.
MAX_SCRIPT_BYTES = 262144
MAX_COMMAND_ENTRIES = 256
MAX_ARG_BYTES = 32768
MAX_ENV_ENTRIES = 128
MAX_ENV_NAME_LEN = 256
MAX_ENV_VALUE_BYTES = 32768
MIN_TIMEOUT_SECONDS = 1
MAX_TIMEOUT_SECONDS = 86400
MAX_LABEL_LEN = 63
MAX_SUBDOMAIN_LEN = 253

INTERPRETERS = ("bash", "python", "exec")

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

Timeout = Union[int, float]


class Program(TypedDict, total=False):
    """The keyword arguments that describe a Run (see `Client.run`)."""

    script: Optional[str]
    interpreter: Optional[str]
    command: Optional[Sequence[str]]
    args: Optional[Sequence[str]]
    input: Any
    env: Optional[Mapping[str, str]]
    timeout: Optional[Timeout]
    name: Optional[str]
    labels: Optional[Mapping[str, str]]


class RunOptions(Program, total=False):
    """`Program` and how long the client waits for the Run."""

    wait_timeout: Optional[float]


DEFAULT_WAIT_MARGIN_SECONDS = 60.0
"""With a `timeout`, the client waits at most this much longer than it for the Run to
end: time to get a warm pod, start, and report the terminal phase."""


def split_options(options: RunOptions) -> Tuple[Program, Optional[float]]:
    """The Run's arguments, and how long to wait for it: `wait_timeout`, else `timeout` +
    DEFAULT_WAIT_MARGIN_SECONDS, else no limit."""
    program = cast(Program, {k: v for k, v in options.items() if k != "wait_timeout"})
    wait_timeout = options.get("wait_timeout")
    timeout = options.get("timeout")
    if wait_timeout is None and timeout is not None:
        wait_timeout = float(timeout) + DEFAULT_WAIT_MARGIN_SECONDS
    return program, wait_timeout


def check_label(field: str, value: object) -> str:
    """A DNS-1123 label (a Runtime's or a namespace's name)."""
    if not isinstance(value, str) or not value:
        raise InvalidRun(field, "must be a non-empty string")
    if len(value) > MAX_LABEL_LEN:
        raise InvalidRun(field, f"must be at most {MAX_LABEL_LEN} characters")
    if not _LABEL.match(value):
        raise InvalidRun(
            field,
            f"{value!r} is not a DNS-1123 label: lowercase letters, digits and '-', "
            "starting and ending with a letter or digit",
        )
    return value


def check_subdomain(field: str, value: object) -> str:
    """A DNS-1123 subdomain (a Run's name)."""
    if not isinstance(value, str) or not value:
        raise InvalidRun(field, "must be a non-empty string")
    if len(value) > MAX_SUBDOMAIN_LEN:
        raise InvalidRun(field, f"must be at most {MAX_SUBDOMAIN_LEN} characters")
    if not all(_LABEL.match(part) for part in value.split(".")):
        raise InvalidRun(
            field,
            f"{value!r} is not a DNS-1123 subdomain: dot-separated labels of lowercase "
            "letters, digits and '-'",
        )
    return value


def _check_string(field: str, value: object, limit: int) -> str:
    if not isinstance(value, str):
        raise InvalidRun(field, f"must be a string, not {type(value).__name__}")
    if len(value.encode("utf-8")) > limit:
        raise InvalidRun(field, f"must be at most {limit} bytes")
    if "\x00" in value:
        raise InvalidRun(field, "must not contain NUL")
    return value


def _check_argv(field: str, values: object, *, first_non_empty: bool) -> list[str]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise InvalidRun(field, "must be a list of strings")
    if len(values) > MAX_COMMAND_ENTRIES:
        raise InvalidRun(field, f"must have at most {MAX_COMMAND_ENTRIES} entries")
    argv = [_check_string(f"{field}[{i}]", v, MAX_ARG_BYTES) for i, v in enumerate(values)]
    if first_non_empty and (not argv or not argv[0]):
        raise InvalidRun(field, "must name a program: the first entry may not be empty")
    return argv


def _check_env(env: object) -> list[dict[str, str]]:
    if not isinstance(env, Mapping):
        raise InvalidRun("spec.env", "must be a mapping of names to values")
    if len(env) > MAX_ENV_ENTRIES:
        raise InvalidRun("spec.env", f"must have at most {MAX_ENV_ENTRIES} entries")
    entries = []
    for i, (name, value) in enumerate(env.items()):
        field = f"spec.env[{i}]"
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise InvalidRun(f"{field}.name", f"{name!r} is not a C identifier")
        if len(name) > MAX_ENV_NAME_LEN:
            raise InvalidRun(f"{field}.name", f"must be at most {MAX_ENV_NAME_LEN} characters")
        if name.startswith("KRT_"):
            raise InvalidRun(f"{field}.name", "names starting with KRT_ belong to runtimed")
        entries.append(
            {"name": name, "value": _check_string(f"{field}.value", value, MAX_ENV_VALUE_BYTES)}
        )
    return entries


def timeout_duration(timeout: object) -> str:
    """`spec.timeout` for a timeout in seconds: a whole number from 1 to 86400."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise InvalidRun("spec.timeout", "must be a number of seconds")
    if not math.isfinite(timeout) or timeout != int(timeout):
        raise InvalidRun("spec.timeout", "must be a whole number of seconds")
    if not MIN_TIMEOUT_SECONDS <= timeout <= MAX_TIMEOUT_SECONDS:
        raise InvalidRun(
            "spec.timeout",
            f"must be from {MIN_TIMEOUT_SECONDS}s to {MAX_TIMEOUT_SECONDS}s (24h)",
        )
    return f"{int(timeout)}s"


def _program(
    interpreter: Optional[str], script: Optional[str], command: Optional[Sequence[str]]
) -> Dict[str, Any]:
    """The interpreter and the program source, checked against each other."""
    if script is not None and command is not None:
        raise InvalidRun("spec.command", "give either script or command, not both")
    if script is None and command is None:
        raise InvalidRun("spec.script", "give a script (bash or python) or a command (exec)")
    if interpreter is None:
        interpreter = "exec" if command is not None else "bash"
    if interpreter not in INTERPRETERS:
        raise InvalidRun("spec.interpreter", f"{interpreter!r} is not one of bash, python, exec")
    if command is not None:
        if interpreter != "exec":
            raise InvalidRun(
                "spec.interpreter", f"a command runs with interpreter exec, not {interpreter}"
            )
        return {"interpreter": "exec", "command": _check_argv("spec.command", command,
                                                               first_non_empty=True)}
    if interpreter == "exec":
        raise InvalidRun("spec.script", "interpreter exec runs a command, not a script")
    text = _check_string("spec.script", script, MAX_SCRIPT_BYTES)
    if not text:
        raise InvalidRun("spec.script", "must not be empty")
    return {"interpreter": interpreter, "script": text}


def run_manifest(runtime: str, **program: Unpack[Program]) -> Dict[str, Any]:
    """The Run object to create, or InvalidRun naming the first field at fault."""
    unknown = set(program) - set(Program.__annotations__)
    if unknown:
        raise TypeError(f"unexpected keyword arguments: {', '.join(sorted(unknown))}")
    spec: Dict[str, Any] = {"runtimeRef": {"name": check_label("spec.runtimeRef.name", runtime)}}
    spec.update(_program(program.get("interpreter"), program.get("script"),
                         program.get("command")))
    args, env, input = program.get("args"), program.get("env"), program.get("input")
    timeout, name, labels = program.get("timeout"), program.get("name"), program.get("labels")
    if args is not None:
        spec["args"] = _check_argv("spec.args", args, first_non_empty=False)
    if env:
        spec["env"] = _check_env(env)
    if input is not None:
        try:
            spec["input"] = json.loads(json.dumps(input, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise InvalidRun("spec.input", f"must be JSON-serializable: {exc}") from None
    if timeout is not None:
        spec["timeout"] = timeout_duration(timeout)
    metadata: Dict[str, Any] = {}
    if name is not None:
        metadata["name"] = check_subdomain("metadata.name", name)
    else:
        # The server appends 5 characters; a label of at most 63 plus '-' and 5 fits.
        metadata["generateName"] = f"{runtime}-"
    if labels:
        metadata["labels"] = dict(labels)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Run", "metadata": metadata, "spec": spec}
