"""Tag audio files with PaSST: ``python inference.py recording.mp3 folder/ [--model NAME_OR_CKPT] ...``.

The same command as ``passt-tag`` (installed by ``pip install -e .``); it lives in
:mod:`helpers.inference.tag_command`, ``--help`` lists its options. See README.md, "Inference:
tagging and embedding audio files".
"""

from helpers.inference.tag_command import main, run

__all__ = ["main"]

if __name__ == "__main__":
    run()
