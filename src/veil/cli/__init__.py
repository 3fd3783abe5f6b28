"""The `veil` command line: typer + rich.

Every command goes through one error boundary (`veil.console.command`): an error is printed as
one line; exit codes: 0 success, 2 bad input (some file could not be read, a bad option), 1
failure, 130 interrupted. Flags are spelt the same in every command: ``-o/--output``,
``--batch-size``, ``--resume/--no-resume``; ``veil train MODEL`` trains every learned model.

- `app`: the typer apps; `protect`: ``veil protect`` (files, folders, live sources);
  `commands`: models, demo, version, status. The commands of the learned systems and of
  evaluation live beside them (`veil.qmvae.cli`, `veil.stream.cli`, `veil.action.cli`,
  `veil.evaluate.cli`) and are registered here only when the command line names them.

May import anything; nothing imports it but the entry point and tests.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys

from veil.cli import commands, protect  # noqa: F401  (register their commands on `app`)
from veil.cli.app import app, train_app
from veil.console import err

__all__ = ["app", "main", "register_commands"]


def _register_evaluate() -> None:
    from veil.evaluate.cli import evaluate_command

    app.command("evaluate")(evaluate_command)


def _register_stream() -> None:
    from veil.stream.cli import decode_command, encode_command

    app.command("encode")(encode_command)
    app.command("decode")(decode_command)


def _register_train() -> None:
    from veil.action.cli import train_action_command
    from veil.qmvae.cli import train_qmvae_command
    from veil.stream.cli import train_codec_command

    train_app.command("action")(train_action_command)
    train_app.command("codec")(train_codec_command)
    train_app.command("qmvae")(train_qmvae_command)
    app.add_typer(train_app, name="train")


def _register_review() -> None:
    from veil.cli.review import review_command

    app.command("review")(review_command)


def _register_action() -> None:
    from veil.action.cli import app as action_app

    app.add_typer(action_app, name="action")


# The commands that live beside their subsystems (each module owns its options). Their modules
# import torch models, codecs and plotting; importing only the one a command line names keeps
# `veil protect` starting fast.
_LAZY = {"evaluate": _register_evaluate, "encode": _register_stream, "decode": _register_stream,
         "train": _register_train, "action": _register_action, "review": _register_review}


# What `veil --help` says of each of those, without importing them (torch alone takes seconds).
# tests/test_cli.py holds each to the registered command's own help.
SUMMARIES = {
    "evaluate": "Measure how well PROTECTED hides the people of ORIGINAL, and what it keeps.",
    "encode": "Encode a video into a privacy-preserving .veil stream (codes + the video's own audio).",
    "decode": "Decode a .veil stream back to a video with its sound (the receiver's side).",
    "review": "Check what was protected, fix what was missed, render again: a page on a local server.",
    "train": "Train veil's learned models (--default: the shipped ones).",
    "action": "Privacy-preserving action recognition (STPrivacy): evaluate, predict, make-synthetic (train: veil "
              "train action).",
}

_REGISTERED: set = set()


def register_commands(argv: list[str] | None = None) -> None:
    """Register the command `argv` names; for a command line that names none (``veil``,
    ``veil --help``), only their one-line summaries; with no `argv` (tests), every command.

    Registering again is a no-op: tests and the entry point may both call it.
    """
    if argv is not None and not _REGISTERED:
        first = next((a for a in argv if not a.startswith("-")), None)
        if first not in _LAZY:
            if first is None:
                _REGISTERED.add(_register_summaries)
                _register_summaries()
            return
        wanted = {_LAZY[first]}
    else:
        wanted = set(_LAZY.values())
    for register in dict.fromkeys(r for r in _LAZY.values() if r in wanted and r not in _REGISTERED):
        _REGISTERED.add(register)
        register()


def _register_summaries() -> None:
    for name, summary in SUMMARIES.items():
        app.command(name, help=summary, add_help_option=False)(_summary_only)


def _summary_only() -> None:
    """Stands in for a command in the listing only: a command line that names it registers it."""


def main() -> None:
    register_commands(sys.argv[1:])
    code = 0
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted; no partial output was left")
        code = 130
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if not isinstance(done.code, (int, type(None))):
            print(done.code, file=sys.stderr)
    _leave(code)


def _leave(code: int) -> None:
    """End the process with `code` once everything the command wrote is out.

    By this point every output file is written, renamed into place and closed, and the command's
    threads are joined. What the interpreter would do next is tear down every module (ONNX
    Runtime, OpenCV, PyAV and their native pools), which costs 0.2-0.3 s of a short clip's
    command and has nothing left to save: the exit handlers (Ray's shutdown among them) and
    logging's flush run here, the streams are flushed, and the process leaves without it.
    """
    try:
        atexit._run_exitfuncs()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


if __name__ == "__main__":
    main()
