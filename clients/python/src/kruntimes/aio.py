"""`AsyncClient`: the Client for asyncio programs.

The official `kubernetes` client is synchronous, so each call runs in a worker thread
(`asyncio.to_thread`); the event loop stays free while a Run executes. Cancelling the
awaiting task cancels the Run (`spec.cancel: true`) and waits for it to end before the
CancelledError goes on.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Mapping, Optional, Sequence, Tuple

from ._result import Result
from ._spec import Timeout, run_manifest
from . import client as _client
from .client import Client, Item, RunRef


class AsyncClient:
    """`Client` with coroutine methods; the arguments are those of `Client`."""

    def __init__(
        self,
        namespace: Optional[str] = None,
        kubeconfig: Optional[str] = None,
        context: Optional[str] = None,
        *,
        api_client: Any = None,
        client: Optional[Client] = None,
    ) -> None:
        self.sync = client or Client(namespace, kubeconfig, context, api_client=api_client)

    @property
    def namespace(self) -> str:
        return self.sync.namespace

    async def cancel(self, name: str) -> None:
        await asyncio.to_thread(self.sync.cancel, name)

    async def result(self, name: str) -> Result:
        return await asyncio.to_thread(self.sync.result, name)

    async def run(
        self,
        runtime: str,
        *,
        script: Optional[str] = None,
        interpreter: Optional[str] = None,
        command: Optional[Sequence[str]] = None,
        args: Optional[Sequence[str]] = None,
        input: Any = None,
        env: Optional[Mapping[str, str]] = None,
        timeout: Optional[Timeout] = None,
        wait_timeout: Optional[float] = None,
        name: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
    ) -> Result:
        """`Client.run` as a coroutine."""
        async for item in self.stream(
            runtime, script=script, interpreter=interpreter, command=command, args=args,
            input=input, env=env, timeout=timeout, wait_timeout=wait_timeout, name=name,
            labels=labels,
        ):
            if isinstance(item, Result):
                return item
        raise AssertionError("the output stream ended without a result")  # pragma: no cover

    def stream(
        self,
        runtime: str,
        *,
        script: Optional[str] = None,
        interpreter: Optional[str] = None,
        command: Optional[Sequence[str]] = None,
        args: Optional[Sequence[str]] = None,
        input: Any = None,
        env: Optional[Mapping[str, str]] = None,
        timeout: Optional[Timeout] = None,
        wait_timeout: Optional[float] = None,
        name: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
    ) -> AsyncIterator[Item]:
        """`Client.stream` as an async iterator. The arguments are checked at once (an
        InvalidRun raises here); the Run is created on the first iteration."""
        manifest = run_manifest(
            runtime, name=name, interpreter=interpreter, script=script, command=command,
            args=args, input=input, env=env, timeout=timeout, labels=labels,
        )
        if wait_timeout is None and timeout is not None:
            wait_timeout = float(timeout) + _client.DEFAULT_WAIT_MARGIN_SECONDS
        return self._stream(manifest, wait_timeout)

    async def _stream(
        self, manifest: dict[str, Any], wait_timeout: Optional[float]
    ) -> AsyncIterator[Item]:
        ref: RunRef = await asyncio.to_thread(self.sync._create, manifest)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Tuple[str, Any]] = asyncio.Queue()
        items = self.sync.follow(ref, wait_timeout=wait_timeout)

        def pump() -> None:
            try:
                for item in items:
                    loop.call_soon_threadsafe(queue.put_nowait, ("item", item))
                loop.call_soon_threadsafe(queue.put_nowait, ("done", None))
            except BaseException as exc:  # handed to the awaiting task, raised there
                loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))

        worker = loop.run_in_executor(None, pump)
        finished = False
        try:
            while True:
                kind, value = await queue.get()
                if kind == "done":
                    return
                if kind == "error":
                    raise value
                if isinstance(value, Result):
                    finished = True
                yield value
        finally:
            if not finished:
                # The task was cancelled or the consumer left: cancel the Run; the
                # worker then sees it end and stops.
                await asyncio.shield(
                    asyncio.to_thread(self.sync.cancel_and_wait, ref.name)
                )
            await asyncio.shield(worker)
