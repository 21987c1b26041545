"""Cells run concurrently, one worker thread per device (`Parallel.CELLS`)."""

from __future__ import annotations

import sys
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

import jax

from ._results import Cell, CellResult


def run_concurrently(todo: list[Cell], devices: list, compute, bar, scope) -> dict[str, CellResult]:
    """One worker thread per device, each taking the next unfinished cell and running it
    (`compute(cell)`) with that device as JAX's default, inside `scope()` (the run's
    precision, which is thread-local). A failing cell stops the others from starting new
    cells; the cells already running finish and are saved, then the error is raised."""
    pending = list(reversed(todo))
    lock, stop = threading.Lock(), threading.Event()
    results: dict[str, CellResult] = {}
    running: set[str] = set()

    def worker(device):
        with jax.default_device(device), scope():
            while not stop.is_set():
                with lock:
                    if not pending:
                        return
                    cell = pending.pop()
                    running.add(cell.name)
                try:
                    results[cell.name] = compute(cell)
                except BaseException:
                    stop.set()
                    raise
                finally:
                    with lock:
                        running.discard(cell.name)
                with lock:
                    bar.update(1)

    with ThreadPoolExecutor(max_workers=len(devices), thread_name_prefix="pcscale-cell") as pool:
        futures = [pool.submit(worker, device) for device in devices[: max(1, len(todo))]]
        try:
            finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
        except KeyboardInterrupt:
            stop.set()  # running cells finish and are saved; no new cell starts
            with lock:
                names = ", ".join(sorted(running))
            print(f"\ninterrupted: no new cell starts; waiting for the cells in flight ({names}) to finish and be "
                  "saved (kill the process to abandon them).", file=sys.stderr, flush=True)
            raise
        for future in finished:
            error = future.exception()
            if error is not None:
                stop.set()
                wait(futures)
                raise error
    return results
