"""What a run tells the user at its end: where its checkpoints and records are, how to resume it,
and no empty folders left behind by a run that failed before writing anything."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: the command line of this process' experiment (set by :func:`helpers.experiment.cli.run_cli`; None when
#: the experiment runs from Python, ``ex.run``)
command_line: list[str] | None = None


def how_to_resume(checkpoint: str | os.PathLike) -> str:
    """What continues this run from ``checkpoint``: the exact command, or the key to add to it."""
    if command_line:
        return f"resume it with\n  {resume_command(command_line, checkpoint)}"
    return f"resume with the same config and ckpt_path={os.fspath(checkpoint)}"


def resume_command(argv: Sequence[str], checkpoint: str | os.PathLike) -> str:
    """The command line that continues this run from ``checkpoint``: the same one (``argv``: the
    script and its arguments, as ``sys.argv``) with ``ckpt_path=`` set, and ``DDP=N`` when it was set."""
    args = [a for a in argv[1:] if not a.startswith("ckpt_path=")]
    update = f"ckpt_path={os.fspath(checkpoint)}"
    if "with" in args:
        at = args.index("with") + 1
        args[at:at] = [update]
    else:
        args += ["with", update]
    ddp = os.environ.get("DDP", "").strip()
    return (f"DDP={ddp} " if ddp else "") + " ".join(shlex.quote(a) for a in ["python", argv[0], *args])


def sacred_run_folders(run: Any) -> list[str]:
    """Where sacred stores this run (the ``-F`` folders, other observers by name)."""
    places = []
    for observer in getattr(run, "observers", []):
        folder = getattr(observer, "dir", None)
        places.append(str(folder) if folder else type(observer).__name__)
    return places


def summary(run_dir: str | os.PathLike, best: tuple[str, str, float | None] | None, last: str | None,
            metrics: Mapping[str, float], sacred: Sequence[str]) -> str:
    """The end of a training run: best and last checkpoints with their metrics, the run folders.

    ``best``: (path, monitored metric, its value) of the best checkpoint; ``last``: the path of
    ``last.ckpt``; ``metrics``: the last validation's.
    """
    lines = ["", "Training finished."]
    if best and best[0]:
        path, monitor, value = best
        lines.append(f"  best checkpoint: {path}" + (f"  ({monitor} {value:.4g})" if value is not None else ""))
    if last:
        shown = "  ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()))
        lines.append(f"  last checkpoint: {last}" + (f"  ({shown})" if shown else ""))
    lines.append(f"  run folder: {os.fspath(run_dir)}")
    if sacred:
        lines.append(f"  sacred run: {', '.join(sacred)}")
    else:
        lines.append("  sacred run: not stored (-F <folder> keeps its config, metrics and console output)")
    return "\n".join(lines)


def remove_if_empty(folder: str | os.PathLike) -> bool:
    """Remove ``folder`` when it holds nothing but empty folders (a run that failed before writing anything)."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if not path.is_dir() or any(path.iterdir()):
            return False
        path.rmdir()
    folder.rmdir()
    return True
