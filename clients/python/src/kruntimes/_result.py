"""What a Run hands back: output events while it runs and its Result at the end."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from ._records import OutputAssembler

TERMINAL_PHASES = frozenset({"Succeeded", "Failed", "TimedOut", "Cancelled", "Error"})


@dataclass(frozen=True)
class Output:
    """A chunk of a running Run's output, as the program wrote it (not always a line)."""

    stream: str
    """`stdout` or `stderr`."""
    data: bytes

    @property
    def text(self) -> str:
        """The chunk decoded as UTF-8 (a character split across chunks shows as U+FFFD)."""
        return self.data.decode("utf-8", "replace")


@dataclass(frozen=True)
class Result:
    """How a Run ended and what it printed."""

    run_name: str
    phase: str
    """`Succeeded`, `Failed`, `TimedOut`, `Cancelled` or `Error`."""
    exit_code: Optional[int]
    stdout: str
    stderr: str
    truncated: bool
    """Output beyond the Runtime's `limits.maxOutputBytes` per stream was dropped."""
    reason: Optional[str]
    message: Optional[str]
    tails: bool
    """`stdout` and `stderr` are only the ends the Run's status keeps (16 KiB each):
    the whole output could not be read from the pod's log (the pod was gone, or records
    were missing)."""

    @property
    def ok(self) -> bool:
        """Whether the program exited 0."""
        return self.phase == "Succeeded"


def phase_of(run: Mapping[str, Any]) -> Optional[str]:
    status = run.get("status") or {}
    phase = status.get("phase")
    return phase if isinstance(phase, str) else None


def is_terminal(run: Mapping[str, Any]) -> bool:
    return phase_of(run) in TERMINAL_PHASES


def build_result(run: Mapping[str, Any], assembler: Optional[OutputAssembler]) -> Result:
    """The Result of a terminal Run: the output read from the log when it is complete,
    else the status tails (and `tails` says so)."""
    status = run.get("status") or {}
    output = status.get("output") or {}
    if assembler is not None and assembler.complete:
        stdout = assembler.output("stdout").decode("utf-8", "replace")
        stderr = assembler.output("stderr").decode("utf-8", "replace")
        tails = False
    else:
        stdout = str(output.get("stdoutTail") or "")
        stderr = str(output.get("stderrTail") or "")
        tails = True
    exit_code = status.get("exitCode")
    return Result(
        run_name=str(run.get("metadata", {}).get("name", "")),
        phase=str(status.get("phase", "")),
        exit_code=exit_code if isinstance(exit_code, int) else None,
        stdout=stdout,
        stderr=stderr,
        truncated=bool(output.get("truncated", False)),
        reason=status.get("reason"),
        message=status.get("message"),
        tails=tails,
    )
