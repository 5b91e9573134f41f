"""Ctrl-C ends training the way SIGTERM does, instead of Lightning's ``exit(1)``.

Lightning turns a ``KeyboardInterrupt`` into "graceful shutdown" and ``sys.exit(1)``: no error the
run can report, so no word on how to continue. With :class:`CtrlCStopsLikeSigterm` a Ctrl-C
(SIGINT) while training goes through the trainer's SIGTERM handler: training stops at the end of
the batch (every DDP rank at the same step, since they all get the Ctrl-C and agree as for
SIGTERM), the command's SIGTERM path reports it (the sacred run ``FAILED``, the resume command
printed), and the last checkpoint is there to resume from. A second Ctrl-C interrupts at once
(Python's ``KeyboardInterrupt``). Lightning restores the process' own handler when training ends.
"""

from __future__ import annotations

import signal
import threading

import pytorch_lightning as pl

#: the signal that stopped training, as the trainer's signal connector records it (None: SIGTERM)
STOP_SIGNAL_ATTRIBUTE = "stop_signal"


def stop_signal_name(trainer: pl.Trainer) -> str:
    """``"Ctrl-C (SIGINT)"`` or ``"SIGTERM"``: what asked this trainer to stop."""
    return getattr(trainer._signal_connector, STOP_SIGNAL_ATTRIBUTE, None) or "SIGTERM"


class CtrlCStopsLikeSigterm(pl.Callback):
    """While training, SIGINT is handled as SIGTERM (module docstring)."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers belong to the main thread
        connector = trainer._signal_connector

        def stop(signum, frame) -> None:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C: at once
            setattr(connector, STOP_SIGNAL_ATTRIBUTE, "Ctrl-C (SIGINT)")
            connector._sigterm_notifier_fn(signum, frame)  # the handler installed now (DDP-aware under DDP)

        signal.signal(signal.SIGINT, stop)
