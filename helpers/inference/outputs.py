"""Writing tagging results: terminal summary, CSV and JSON per window, plots, embeddings."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from helpers.inference.tagging import FileResult


def summary(result: FileResult, class_names: Sequence[str], k: int) -> str:
    """The file, its length, and its ``k`` strongest classes (mean over windows, and max)."""
    if not result.ok:
        return f"{result.path}: FAILED ({result.error})"
    n = len(result.starts)
    lines = [f"{result.path} ({result.duration:.2f} s, {n} window{'s' if n > 1 else ''})"]
    lines += [f"  ! {note}" for note in result.notes]
    width = max(len(class_names[c]) for c, _, _ in result.top(k))
    lines += [f"  {class_names[c]:<{width}}  mean {mean:.3f}  max {peak:.3f}" for c, mean, peak in result.top(k)]
    return "\n".join(lines)


class WindowCsv:
    """A CSV with one row per window (``file, window, start_s, end_s`` and the score of every class),
    written as the results come, so an interrupted run keeps the files already done."""

    def __init__(self, path: str | os.PathLike, class_names: Sequence[str]) -> None:
        self.fh = open(path, "w", newline="", encoding="utf-8")  # closed by close()
        self.writer = csv.writer(self.fh)
        self.writer.writerow(["file", "window", "start_s", "end_s", *class_names])

    def add(self, result: FileResult) -> None:
        if result.ok:
            for i, (start, end, scores) in enumerate(zip(result.starts, result.ends, result.scores, strict=True)):
                self.writer.writerow([result.path, i, f"{start:.3f}", f"{end:.3f}", *(f"{x:.6g}" for x in scores)])
            self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def to_json(results: Sequence[FileResult], class_names: Sequence[str], model: str, k: int) -> dict:
    """Every result: windows with start/end and scores (class order of ``classes``), whole-file mean
    and max, the top ``k``; the failed files with their errors."""
    files, failed = [], []
    for r in results:
        if not r.ok:
            failed.append({"file": r.path, "error": r.error})
            continue
        files.append({
            "file": r.path, "duration_s": round(r.duration, 4), "notes": list(r.notes),
            "top": [{"class": class_names[c], "mean": round(m, 6), "max": round(p, 6)} for c, m, p in r.top(k)],
            "mean": [round(float(s), 6) for s in r.mean], "max": [round(float(s), 6) for s in r.max],
            "windows": [{"start_s": round(float(s), 4), "end_s": round(float(e), 4),
                         "scores": [round(float(x), 6) for x in sc]}
                        for s, e, sc in zip(r.starts, r.ends, r.scores, strict=True)],
        })
    return {"model": model, "classes": list(class_names), "files": files, "failed": failed}


def write_json(path: str | os.PathLike, document: dict) -> None:
    Path(path).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


def plot_path(path: str | os.PathLike, index: int, result: FileResult, several: bool) -> Path:
    """``path`` itself for a single input file; ``<stem>_<index>_<file stem><suffix>`` among several."""
    path = Path(path)
    return path.with_name(f"{path.stem}_{index:03d}_{Path(result.path).stem}{path.suffix}") if several else path


def plot(path: str | os.PathLike, result: FileResult, class_names: Sequence[str], n_classes: int = 8) -> None:
    """The ``n_classes`` strongest classes (by max over windows) over time, one line each at the
    window centres."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centres = (result.starts + result.ends) / 2
    strongest = np.argsort(-result.max, kind="stable")[:n_classes]
    fig, ax = plt.subplots(figsize=(10, 4))
    for c in strongest:
        ax.plot(centres, result.scores[:, c], marker="o" if len(centres) < 50 else None, label=class_names[c])
    ax.set(xlabel="time (s, window centre)", ylabel="score", ylim=(0, 1.02), xlim=(0, max(result.duration, 1e-3)),
           title=Path(result.path).name)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_embeddings(path: str | os.PathLike, results: Sequence[FileResult]) -> Path:
    """``[files, D]`` float32 in ``path`` (.npy), the row order in ``<path stem>.files.txt`` beside it."""
    path = Path(path)
    ok = [r for r in results if r.ok]
    np.save(path, np.stack([r.embedding for r in ok]).astype(np.float32) if ok else np.zeros((0, 0), np.float32))
    listing = path.with_name(path.stem + ".files.txt")
    listing.write_text("".join(f"{r.path}\n" for r in ok), encoding="utf-8")
    return listing
