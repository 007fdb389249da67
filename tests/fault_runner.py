"""Runs `vaezoo train` (cli.main) and SIGKILLs it at the K-th Python call made while the run writes
its files: inside RunCheckpoint.on_epoch_end of the second epoch and later, and after fit returns
(model.keras, samples, state). K=0 never kills and prints how many such calls there were.

    python fault_runner.py K vaezoo-train-arguments...
"""

import os
import signal
import sys

from vaezoo import cli, runs
from vaezoo.models.base import BaseVAE

kill_at = int(sys.argv[1])
state = {"on": False, "calls": 0}

original_epoch_end = runs.RunCheckpoint.on_epoch_end


def on_epoch_end(self, epoch, logs=None):
    state["on"] = epoch >= 1
    try:
        return original_epoch_end(self, epoch, logs)
    finally:
        state["on"] = False


original_fit = BaseVAE.fit


def fit(self, *args, **kwargs):
    history = original_fit(self, *args, **kwargs)
    state["on"] = True  # the writes after training
    return history


def profile(frame, event, arg):
    if state["on"] and event in ("call", "c_call"):
        state["calls"] += 1
        if state["calls"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


runs.RunCheckpoint.on_epoch_end = on_epoch_end
BaseVAE.fit = fit
sys.setprofile(profile)
code = cli.main(sys.argv[2:])
sys.setprofile(None)
print(f"CALLS {state['calls']}")
sys.exit(code)
