"""Web demo: ``python app.py --model NAME_OR_CKPT [--port 7860]``, then open http://127.0.0.1:7860.

The same command as ``passt-app`` (installed by ``pip install -e .``); it lives in
:mod:`helpers.inference.web_demo`, ``--help`` lists its options. See README.md, "Web demo".
"""

from helpers.inference.web_demo import main, run

__all__ = ["main"]

if __name__ == "__main__":
    run()
