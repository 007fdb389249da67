"""``vaezoo train``: :func:`vaezoo.train`, and the supervisor of a multi-worker run."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time

from vaezoo import distribute, runs, trainer
from vaezoo.cli import common


def cmd_train(args) -> int:
    def on_strategy(stage: str) -> None:  # the multi-worker supervisor waits from "wait" to "ready"
        _tell_supervisor(b"w" if stage == "wait" else b"r", last=stage == "ready")

    result = trainer.train(args.name, overrides=common.overrides(args), out=args.out, seed=args.seed, limit=args.limit,
                           data_dir=args.data_dir, strategy=args.strategy, pretrained=args.pretrained,
                           vqvae=args.vqvae, kl_warmup=args.kl_warmup or 0, init_output_bias=args.init_output_bias,
                           overwrite=args.overwrite, verbose=args.verbose, on_strategy=on_strategy)
    if not result.already_finished:
        print(f"saved {result.out / runs.MODEL_FILE}; wrote {', '.join(map(str, result.written))}; TensorBoard logs "
              f"in {result.out / 'logs'}")
    return 0


# ---- multi_worker: a supervisor that can always be interrupted --------------------------------
#
# MultiWorkerMirroredStrategy() blocks in C++, holding the GIL, until every worker of TF_CONFIG has
# connected, and TensorFlow's own SIGTERM handler swallows SIGTERM: no signal handler or thread of
# the waiting process runs. So `vaezoo train --strategy multi_worker` runs the training in a child
# process and supervises it from one that stays responsive: SIGINT/SIGTERM (or --timeout) while the
# child still waits for its peers stop it at once, naming the peers; afterwards signals are passed on.

SUPERVISED_ENV = "VAEZOO_SUPERVISED_FD"


def _tell_supervisor(message: bytes, last: bool = False) -> None:
    fd = os.environ.get(SUPERVISED_ENV)
    if fd:
        with contextlib.suppress(OSError):
            os.write(int(fd), message)
            if last:
                os.close(int(fd))
        if last:
            del os.environ[SUPERVISED_ENV]


def supervise(argv: list[str], args) -> int:
    peers = distribute.peers()
    waiting_for = ", ".join(peers) or "the workers of TF_CONFIG"
    read_fd, write_fd = os.pipe()
    env = {**os.environ, SUPERVISED_ENV: str(write_fd)}
    child = subprocess.Popen([sys.executable, "-m", "vaezoo", *argv], env=env, pass_fds=(write_fd,))
    os.close(write_fd)
    caught: list[int] = []
    handlers = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    waiting_since, ready, pipe_open = None, False, True
    try:
        while child.poll() is None:
            if pipe_open:
                readable, _, _ = select.select([read_fd], [], [], 0.2)
                if readable:
                    message = os.read(read_fd, 16)
                    pipe_open = bool(message)  # b"": the child closed it (ready, or ending)
                    if b"w" in message:
                        waiting_since = time.monotonic()
                        print(f"vaezoo train: waiting for the other workers to connect ({waiting_for})",
                              file=sys.stderr, flush=True)
                    ready = ready or b"r" in message
            else:
                time.sleep(0.2)
            if caught and not ready:
                _stop(child)
                what = "waiting for the other workers to connect" if waiting_since else "starting"
                print(f"vaezoo train: interrupted while {what} ({waiting_for}).", file=sys.stderr)
                return 128 + caught[0]
            if caught:
                child.send_signal(caught.pop())
            if not ready and waiting_since and args.timeout and time.monotonic() - waiting_since > args.timeout:
                _stop(child)
                print(f"vaezoo train: error: timed out after {args.timeout:g} s waiting for the other workers to "
                      f"connect ({waiting_for}); start them with the same TF_CONFIG cluster, or check the addresses.",
                      file=sys.stderr)
                return 2
        return child.wait()
    finally:
        os.close(read_fd)
        for s, handler in handlers.items():
            signal.signal(s, handler)


def _stop(child: subprocess.Popen) -> None:
    child.kill()  # it cannot handle signals while it waits
    child.wait()
