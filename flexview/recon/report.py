"""Files of a reconstruction: FSC curves as CSV and PNG, and a JSON summary (all atomic)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from flexview.io._atomic import atomic_path, write_text_atomic

__all__ = ["plot_fsc", "write_fsc_csv", "write_summary"]


def write_fsc_csv(path: str | Path, freq: np.ndarray, curves: dict[str, np.ndarray], box: int) -> None:
    """One row per shell: ``shell, frequency_invA, resolution_A`` and one column per curve."""
    names = list(curves)
    buf = io.StringIO()
    buf.write(",".join(["shell", "frequency_invA", "resolution_A"] + names) + "\n")
    for s, f in enumerate(freq):
        res = f"{1.0 / f:.4f}" if f > 0 else "inf"
        values = [f"{float(curves[n][s]):.6f}" for n in names]
        buf.write(",".join([str(s), f"{f:.6f}", res] + values) + "\n")
    write_text_atomic(path, buf.getvalue())


def plot_fsc(path: str | Path, freq: np.ndarray, curves: dict[str, np.ndarray], *,
             title: str = "", marks: dict[str, float] | None = None) -> None:
    """FSC curves against spatial frequency, with the 0.143 line and vertical marks (Å⁻¹)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=110)
    ax = fig.add_subplot()
    for name, values in curves.items():
        ax.plot(freq, values, label=name, lw=1.5)
    ax.axhline(0.143, color="grey", ls="--", lw=1, label="0.143")
    ax.axhline(0.0, color="black", lw=0.5)
    for label, f in (marks or {}).items():
        ax.axvline(f, color="grey", ls=":", lw=1)
        ax.text(f, 0.6, f" {label}", fontsize=8, rotation=90, ha="right", va="center", color="grey")
    ax.set_xlim(0, float(freq[-1]))
    ax.set_ylim(-0.1, 1.05)
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel("FSC")
    top = ax.secondary_xaxis("top", functions=(lambda f: f, lambda f: f))
    ticks = ax.get_xticks()
    top.set_xticks(ticks[ticks > 0])
    top.set_xticklabels([f"{1 / t:.1f}" for t in ticks[ticks > 0]])
    top.set_xlabel("resolution (Å)", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9, pad=22)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def _clean(obj):
    """Make numpy values JSON-friendly; non-finite floats become null."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def write_summary(path: str | Path, summary: dict) -> None:
    """The summary dictionary as indented JSON."""
    write_text_atomic(path, json.dumps(_clean(summary), indent=2) + "\n")
