"""The output every timing benchmark shares: a Markdown table on stdout and, with ``--out``, the record as JSON.

``--report JSON`` prints the table of a record written earlier, without measuring again. No TensorFlow import here,
so that parent processes which only spawn measuring children stay light.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable


def add_output_args(parser: argparse.ArgumentParser) -> None:
    """``--out`` (write the record as JSON) and ``--report`` (print the table of a record and exit)."""
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--report", metavar="JSON", help="print the Markdown table of a results file and exit")


def print_report(path: str, render: Callable[[dict], str]) -> int:
    print(render(json.loads(Path(path).read_text())))
    return 0


def emit(result: dict, render: Callable[[dict], str], out: str | None) -> int:
    """Print ``render(result)`` and write ``result`` to ``out`` (if given) as indented JSON."""
    print(render(result))
    if out:
        Path(out).write_text(json.dumps(result, indent=1))
    return 0
