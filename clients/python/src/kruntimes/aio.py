"""`AsyncClient`: the Client for asyncio programs.

The official `kubernetes` client is synchronous, so each call runs in a worker thread
(`asyncio.to_thread`); the event loop stays free while a Run executes. Cancelling the
awaiting task cancels the Run (`spec.cancel: true`) and waits for it to end before the
CancelledError goes on.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, AsyncIterator, Optional, Tuple

from ._result import Result
from ._spec import RunOptions, run_manifest, split_options
from .client import Client, Item, RunRef

if TYPE_CHECKING:
    from typing_extensions import Unpack


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

    async def run(self, runtime: str, **options: Unpack[RunOptions]) -> Result:
        """`Client.run` as a coroutine."""
        async for item in self.stream(runtime, **options):
            if isinstance(item, Result):
                return item
        raise AssertionError("the output stream ended without a result")  # pragma: no cover

    def stream(self, runtime: str, **options: Unpack[RunOptions]) -> AsyncIterator[Item]:
        """`Client.stream` as an async iterator. The arguments are checked at once (an
        InvalidRun raises here); the Run is created on the first iteration."""
        program, wait_timeout = split_options(options)
        return self._stream(run_manifest(runtime, **program), wait_timeout)

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
