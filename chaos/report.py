"""The chaos report: ``report.md`` (per fault: repeats, events, lost, duplicates, reorderings,
recovery), ``results.json`` and one timeline PNG per run with the fault's window shaded."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from chaos.run import Run


def chart(run: Run, path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - only the report needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    timeline = run.timeline
    assert timeline is not None
    samples = timeline.samples
    at = [s.at for s in samples]
    figure, axes = plt.subplots(3, 1, figsize=(10, 7), sharex=True)
    panels = (
        ([s.events_per_second for s in samples], "events/s into the topic", "#48c"),
        (
            [float("nan") if s.fallback_ratio is None else s.fallback_ratio for s in samples],
            "fallback ratio (sidecars' client counters)",
            "#c84",
        ),
        ([float(s.broker_connections) for s in samples], "broker connections (kernel)", "#c44"),
    )
    for axis, (values, title, color) in zip(axes, panels, strict=True):
        axis.plot(at, values, color=color)
        axis.set_title(title, fontsize=9)
        for mark in timeline.marks:
            end = mark.end if mark.end is not None else (at[-1] if at else mark.start)
            axis.axvspan(mark.start, max(end, mark.start + 0.5), color="#f99", alpha=0.3)
    axes[-1].set_xlabel("seconds")
    labels = "; ".join(m.label for m in timeline.marks)
    figure.suptitle(f"{run.fault.title} (#{run.repeat}): {labels}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def write(runs: Sequence[Run], out: Path, command: str) -> Path:
    """Write everything into ``out``; returns the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Chaos report",
        "",
        f"`{command}` — one fault at a time, each on a fresh fleet producing through its "
        "sidecars on the real node with three brokers. Lost = produced events never read back "
        "from the topic; every run's checks are listed below the table.",
        "",
        "| fault | runs | passed | events | lost | duplicates | re-sent | reorderings "
        "| recovery (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by_fault: dict[str, list[Run]] = {}
    for run in runs:
        by_fault.setdefault(run.fault.name, []).append(run)
    for name, group in by_fault.items():
        done = [r.delivery for r in group if r.delivery is not None]
        recoveries = [
            f"{r.observed.recovery_seconds:.0f}"
            for r in group
            if r.observed.recovery_seconds is not None
        ]
        lines.append(
            f"| {group[0].fault.title} (`{name}`) | {len(group)} | {sum(r.ok for r in group)} "
            f"| {sum(d.events for d in done)} | {sum(d.lost for d in done)} "
            f"| {sum(d.duplicates for d in done)} | {sum(d.resent for d in done)} "
            f"| {sum(d.reorderings for d in done)} | {', '.join(recoveries) or '-'} |"
        )
    for run in runs:
        image = f"{run.fault.name}-{run.repeat}.png"
        if run.timeline is not None and run.timeline.samples:
            chart(run, out / image)
        lines += ["", f"## {run.fault.title} — run {run.repeat}: {'ok' if run.ok else 'FAILED'}"]
        lines += [""] + [f"- {'✓' if c.ok else '✗'} {c.name}: {c.detail}" for c in run.checks]
        if run.observed.facts:
            lines.append(f"- facts: `{json.dumps(run.observed.facts)}`")
        if (out / image).exists():
            lines += ["", f"![timeline]({image})"]
        if run.error:
            lines += ["", "```", run.error.strip()[-3000:], "```"]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps([r.summary() for r in runs], indent=2) + "\n")
    return report
