"""Export a PaSST model as ONNX and torch.export files: ``python export.py --model NAME_OR_CKPT [--out-dir DIR]``.

The same command as ``passt-export`` (installed by ``pip install -e .``); it lives in
:mod:`helpers.inference.export_command`, ``--help`` lists its options. See README.md, "Exporting a model".
"""

from helpers.inference.export_command import main, run

__all__ = ["main"]

if __name__ == "__main__":
    run()
