"""The window store's cost per event at stride 1 and at a larger stride (the event-time
phase check that keeps a restart's windows the same), in one run.

    python -m benchmarks.window_stride --series 100 --events 60000 --stride 4
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from streamdet.core.records import Event, Message
from streamdet.stream.window_store import WindowStore


def per_event_us(stride: int, series: int, events: int, seq_len: int) -> tuple[float, int]:
    """Microseconds a WindowStore takes per event (evenly spaced events, ``series``
    interleaved), and the windows it emitted."""
    store = WindowStore(seq_len, 1, stride=stride)
    value = np.zeros(1, np.float32)
    fed = [
        Event(f"s{i % series}", 1000 * (i // series), value, Message("t", 0, i, None, b"", 0))
        for i in range(events)
    ]
    started = time.perf_counter()
    windows = sum(len(store.add_all(event)) for event in fed)
    return (time.perf_counter() - started) / events * 1e6, windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=100)
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--seq-len", type=int, default=50)
    parser.add_argument("--stride", type=int, default=4)
    args = parser.parse_args()
    report = {}
    for stride in (1, args.stride):
        us, windows = per_event_us(stride, args.series, args.events, args.seq_len)
        report[f"stride_{stride}"] = {"us_per_event": round(us, 1), "windows": windows}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
