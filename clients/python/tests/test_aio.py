"""AsyncClient over the same fake: results, streams, and cancellation of the task."""

from __future__ import annotations

import asyncio

import pytest

from kruntimes import AsyncClient, Client, InvalidRun, Output, Result

from test_client import FakeKube, finished, full_log, run_state


def test_run_returns_the_result() -> None:
    api = FakeKube([run_state("Running", pod="pod-1"), finished(phase="Succeeded", exitCode=0)],
                   logs=[(full_log(), "idle")])
    client = AsyncClient(client=Client._with_api(api))
    result = asyncio.run(client.run("bash", script="echo"))
    assert (result.phase, result.stdout, result.stderr) == ("Succeeded", "one\ntwo\n", "warn\n")


def test_stream_yields_output_then_the_result() -> None:
    api = FakeKube([run_state("Running", pod="pod-1"), finished(phase="Succeeded", exitCode=0)],
                   logs=[(full_log(), "idle")])
    client = AsyncClient(client=Client._with_api(api))

    async def collect() -> list[object]:
        return [item async for item in client.stream("bash", script="echo")]

    items = asyncio.run(collect())
    assert items[0] == Output("stdout", b"one\n")
    assert isinstance(items[-1], Result)


def test_arguments_are_checked_before_anything_is_sent() -> None:
    api = FakeKube([run_state("Pending")])
    client = AsyncClient(client=Client._with_api(api))
    with pytest.raises(InvalidRun):
        client.stream("bash", script="echo", interpreter="exec")
    assert api.created == []


def test_cancelling_the_task_cancels_the_run() -> None:
    api = FakeKube([run_state("Running", pod="pod-1")])
    client = AsyncClient(client=Client._with_api(api))

    async def cancel_it() -> None:
        task = asyncio.ensure_future(client.run("bash", script="sleep 60"))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_it())
    assert api.cancelled >= 1
