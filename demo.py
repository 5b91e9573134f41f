"""``make demo``: train a tiny PaSST on a tiny synthetic AudioSet, on the CPU, in well under a minute.

1. builds a synthetic AudioSet (tones as classes) with the real prepare script;
2. runs the real experiment (``ex_audioset.py`` with ``mini_train tiny_model``: 2 epochs, mixup,
   SWA, the importance sampler), observed by sacred into ``<out>/sacred``, wandb offline;
3. prints the validation metrics and where everything went.

Usage: ``python demo.py [--out DIR]`` (default: a new temporary folder, kept afterwards).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def build_data(root: Path) -> dict:
    """The synthetic AudioSet of the test suite (made by the real prepare script)."""
    sys.path.insert(0, str(ROOT))
    from audioset.synthetic import build_mini_audioset

    return build_mini_audioset(root)


def main(argv: list[str] | None = None) -> dict:
    """Build the data, train, print the metrics; returns the run's result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for data and outputs (default: a temp folder)")
    args = parser.parse_args(argv)
    out = (args.out or Path(tempfile.mkdtemp(prefix="passt_demo_"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_MODE", "offline")  # a demo never uploads
    os.environ.setdefault("WANDB_DIR", str(out))

    start = time.time()
    data_dir = Path(tempfile.mkdtemp(dir=out, prefix="data_"))  # fresh: the builder refuses existing folders
    print(f"[demo] building a synthetic AudioSet in {data_dir} ...", flush=True)
    data = build_data(data_dir)
    print(f"[demo] data ready in {time.time() - start:.0f} s; training a tiny PaSST for 2 epochs ...", flush=True)

    from sacred.observers import FileStorageObserver

    from ex_audioset import ex  # imported late: the data step does not need torch/lightning

    ex.observers.append(FileStorageObserver(str(out / "sacred")))
    run = ex.run(
        named_configs=["mini_train", "tiny_model"],
        config_updates={
            "basedataset": data["basedataset_config"],
            "datasets": {"training": {"batch_size": 4, "num_workers": 0},
                         "test": {"batch_size": 4, "num_workers": 0}},
            "trainer": {"enable_progress_bar": False},
            "output_dir": str(out / "outputs"),
        },
    )
    result = run.result
    print(f"\n[demo] finished in {time.time() - start:.0f} s. Validation metrics after 2 epochs of 5 batches "
          f"(a smoke test of the whole pipeline; too short to learn the classes):")
    for key, value in result.items():
        print(f"  {key:>24s}: {value:.4f}" if isinstance(value, float) else f"  {key:>24s}: {value}")
    print(f"[demo] checkpoints: {run.info.get('last_checkpoint')}")
    print(f"[demo] sacred run:  {out / 'sacred' / str(run._id)}")
    print(f"[demo] wandb (offline): {run.info.get('wandb', {}).get('dir')}")
    return result


if __name__ == "__main__":
    main()
