"""Latency of live output: a line written by a Run to the Output the client yields.

The Run prints its clock (`date +%s.%N`) every 100 ms; each line's latency is the
client's clock when the line arrives minus the printed time (client and pod on one
machine, one clock). With `--container-log`, a thread tail-follows the container's log
file directly (polling every millisecond) for the same lines: the floor, what any
reader of the log gets at best before `pods/log` and the client add their part.

    python bench/live_latency.py --kubeconfig K --namespace NS --runtime bash \\
        [--container-log DIR/node/pods/NS_POD_UID/logs/main.log] [--lines 60]

The first 5 lines are dropped (connection set-up). Prints p50, p90, p99 and max in ms.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import kruntimes
from kruntimes._records import OutputAssembler

WARM_UP_LINES = 5


def percentiles(name: str, values: List[float]) -> str:
    values = sorted(values[WARM_UP_LINES:])
    if not values:
        return f"{name}: no lines"

    def at(q: float) -> float:
        return values[min(len(values) - 1, int(len(values) * q))]

    return (f"{name}: {len(values)} lines, p50 {at(0.5):.1f} ms, p90 {at(0.9):.1f} ms, "
            f"p99 {at(0.99):.1f} ms, max {values[-1]:.1f} ms")


def tail_log(path: Path, uid: str, arrivals: Dict[str, float], stop: threading.Event
             ) -> None:
    """Records when each stdout line of Run `uid` appears in the log file."""
    assembler = OutputAssembler(uid)
    partial_record = b""
    partial_line = b""
    with open(path, "rb") as log:
        log.seek(0, 2)
        while not stop.is_set():
            chunk = log.readline()
            if not chunk:
                time.sleep(0.001)
                continue
            now = time.time()
            partial_record += chunk
            if not partial_record.endswith(b"\n"):
                continue
            new = assembler.feed_line(partial_record)
            partial_record = b""
            if new is None or new.stream != "stdout":
                continue
            *lines, partial_line = (partial_line + new.data).split(b"\n")
            for text in lines:
                arrivals.setdefault(text.decode(), now)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--runtime", required=True)
    parser.add_argument("--container-log", type=Path)
    parser.add_argument("--lines", type=int, default=60)
    options = parser.parse_args()
    client = kruntimes.Client(namespace=options.namespace, kubeconfig=options.kubeconfig)
    script = f"for i in $(seq 1 {options.lines}); do echo $(date +%s.%N); sleep 0.1; done"
    floor: Dict[str, float] = {}
    stop = threading.Event()
    tail: Optional[threading.Thread] = None
    # Created before the log is tailed: the Run's uid filters the records. The Run
    # waits for a pod first, so the thread is reading before its first line.
    ref = client.submit(options.runtime, script=script)
    if options.container_log:
        tail = threading.Thread(target=tail_log, args=(options.container_log, ref.uid, floor,
                                                       stop))
        tail.start()
    seen: List[float] = []
    pending = b""
    result = None
    try:
        for item in client.follow(ref):
            now = time.time()
            if isinstance(item, kruntimes.Output) and item.stream == "stdout":
                pending += item.data
                *lines, pending = pending.split(b"\n")
                seen.extend((now - float(line)) * 1000 for line in lines)
            elif isinstance(item, kruntimes.Result):
                result = item
    finally:
        stop.set()
        if tail is not None:
            tail.join()
    print(f"Run {ref.name}: {result.phase if result else 'no result'}")
    print(percentiles("client (pods/log)", seen))
    if options.container_log:
        print(percentiles("floor (log file)",
                          [(t - float(line)) * 1000 for line, t in floor.items()]))


if __name__ == "__main__":
    main()
