"""Asset metadata of where a training run's time went (phase seconds) and its profiler trace."""

from collections.abc import Mapping

import dagster as dg

from crucible_assets.metadata import markdown_table, metric


def phase_metadata(phase_seconds: Mapping[str, float], profile_trace: str | None = None) -> dict[str, dg.MetadataValue]:
    """``seconds/<phase>`` floats (rounded for reading), a markdown table with each phase's share of the
    run, and the trace's path when the trainer profiled. No phases (a backend that reports none): nothing."""
    if not phase_seconds:
        return {}
    total = phase_seconds.get("total") or sum(v for k, v in phase_seconds.items() if k != "total") or 1.0
    metadata: dict[str, dg.MetadataValue] = {
        f"seconds/{phase}": metric(seconds) for phase, seconds in phase_seconds.items()
    }
    rows = [(phase, f"{seconds:.3f}", f"{100 * seconds / total:.1f}%")
            for phase, seconds in phase_seconds.items() if phase != "total" and seconds > 0]
    metadata["time_by_phase"] = dg.MetadataValue.md(
        markdown_table(["phase", "seconds", "share"], [*rows, ("total", f"{total:.3f}", "100%")]))
    if profile_trace:
        metadata["profile_trace"] = dg.MetadataValue.path(profile_trace)
    return metadata
