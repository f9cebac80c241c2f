"""Where a training run's time goes: wall-clock seconds per phase, and an optional torch.profiler trace."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

PHASES = ("data", "forward", "backward", "communication", "optimizer", "evaluation", "checkpointing")
"""The phases a run reports, in the order of a step; ``other`` is the rest of the run's wall time."""


class PhaseTimer:
    """Adds up wall-clock seconds per named phase.

    ``synchronize`` (``torch.cuda.synchronize`` on a GPU) runs at each phase boundary: CUDA kernels
    run asynchronously, so without it a phase would be charged for the previous phase's kernels.
    While a torch profiler is recording, each phase is also a labelled range in its trace.
    """

    def __init__(self, synchronize: Callable[[], None] | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self.synchronize = synchronize
        self.label_ranges = False
        self._started = time.perf_counter()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        label = nullcontext()
        if self.label_ranges:
            from torch.profiler import record_function

            label = record_function(f"crucible/{name}")
        if self.synchronize is not None:
            self.synchronize()
        started = time.perf_counter()
        try:
            with label:
                yield
        finally:
            if self.synchronize is not None:
                self.synchronize()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def summary(self) -> dict[str, float]:
        """Seconds per phase (every phase of ``PHASES``, 0 when unused), ``other`` and ``total``."""
        total = time.perf_counter() - self._started
        summary = {name: round(self.seconds.get(name, 0.0), 6) for name in PHASES}
        summary.update({name: round(s, 6) for name, s in self.seconds.items() if name not in summary})
        summary["other"] = round(max(total - sum(self.seconds.values()), 0.0), 6)
        summary["total"] = round(total, 6)
        return summary


@contextmanager
def training_profiler(trace_path: str | Path | None, timer: PhaseTimer, *, steps: int,
                      active: int = 3) -> Iterator[Callable[[], None]]:
    """A ``torch.profiler`` recording of a few of the run's ``steps`` optimizer steps, exported as a Chrome
    trace to ``trace_path``.

    Yields the function the loop calls after each optimizer step. The first step is skipped (first-step
    allocation noise) and the second profiled but discarded, when the run has that many; then ``active``
    steps are kept: a whole run would make a trace too large to open. With ``trace_path`` None nothing
    is recorded and the step function does nothing.
    """
    if trace_path is None:
        yield lambda: None
        return
    import torch
    from torch.profiler import ProfilerActivity, profile, schedule

    trace_path = Path(trace_path)
    trace_path.parent.mkdir(parents=True, exist_ok=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    wait, warmup = int(steps >= 3), int(steps >= 2)
    # A run that ends inside the recording window exports what it recorded when the profiler stops.
    profiler = profile(activities=activities, schedule=schedule(wait=wait, warmup=warmup, active=active, repeat=1),
                       on_trace_ready=lambda prof: prof.export_chrome_trace(str(trace_path)))
    timer.label_ranges = True
    try:
        with profiler:
            yield profiler.step
    finally:
        timer.label_ranges = False
