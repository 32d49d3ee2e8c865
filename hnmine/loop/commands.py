"""External commands of ``hnmine run``: command templates, and running one as a step of a round.

A template is split like a shell line (:func:`shlex.split`), then each argument is formatted with the
round's placeholders (``{round}``, ``{model_dir}``, ...; ``{{``/``}}`` for literal braces); no shell
runs unless the template calls one (``sh -c '...'``, which reads the same values from ``HNMINE_*``
environment variables). The command runs in its own process group with its output streamed line by
line to the run's log, named by round and step; on a timeout, on hnmine's own SIGTERM or Ctrl-C, and
after it exits, the whole group is killed, and on Linux the command dies with hnmine if hnmine is
killed outright (``PR_SET_PDEATHSIG``), so a rerun never races a leftover trainer.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import IO, Any

from hnmine.errors import InputError

__all__ = ["PLACEHOLDERS", "CommandFailedError", "command_env", "fill_placeholders", "format_command", "run_command"]

# Every placeholder a template may use, with what it holds; each is also in the command's environment
# as HNMINE_<NAME> (HNMINE_ROUND, HNMINE_MODEL_DIR, ...). Paths are absolute; "" where a round has none.
PLACEHOLDERS: dict[str, str] = {
    "round": "the round number: 0, 1, ...",
    "seed": "the round's seed: --seed + round",
    "python": "the Python interpreter running hnmine",
    "run_dir": "the run directory (--out)",
    "round_dir": "this round's directory, round_NN/",
    "model_dir": "round_NN/model/: where the train step leaves its model (created empty)",
    "prev_model_dir": "the previous round's model/ (round 0: empty)",
    "mined": "round_NN/mined/: the tables mined with the previous round's embeddings, for this round's "
             "training (round 0: empty)",
    "rank_window": "the window those tables were mined from, LO:HI (round 0: empty)",
    "window_size": "its number of ranks, HI - LO + 1 (round 0: empty)",
    "export_dir": "round_NN/export/: where the export step writes (created empty)",
    "user_embeddings": "where hnmine reads the user embeddings after the export (--user-embeddings)",
    "item_embeddings": "where hnmine reads the item embeddings after the export (--item-embeddings)",
    "train": "the training positives, data/train.parquet (the validation split taken out)",
    "valid": "the validation positives, data/valid.parquet (empty without validation)",
    "test": "the test positives (--test; empty without)",
}

# Lines of a failed command's stderr quoted in the one-line error (all of it is in the log).
TAIL_LINES = 5
# Seconds a command gets to exit after SIGTERM (timeout, hnmine stopped) before SIGKILL.
GRACE_SECONDS = 5.0


class CommandFailedError(InputError):
    """An external command of ``hnmine run`` failed, was killed, timed out or left unusable output.

    Exit code 3: the run is intact and a rerun resumes at the failed round.
    """

    exit_code = 3


def format_command(template: str, values: Mapping[str, str], option: str) -> list[str]:
    """``template`` as an argument list with the placeholders filled in; InputError naming ``option``."""
    try:
        parts = shlex.split(template)
    except ValueError as exc:
        raise InputError(f"{option}: cannot split {template!r} into arguments ({exc})") from None
    if not parts:
        raise InputError(f"{option} is empty")
    return [fill_placeholders(part, values, option) for part in parts]


def fill_placeholders(text: str, values: Mapping[str, str], option: str) -> str:
    """One argument (or a path template) with its placeholders filled in; InputError naming ``option``."""
    try:
        return text.format_map(values)
    except KeyError as exc:
        raise InputError(f"{option}: unknown placeholder {{{exc.args[0]}}} in {text!r} "
                         f"(known: {', '.join('{' + name + '}' for name in values)})") from None
    except (ValueError, IndexError, AttributeError) as exc:
        raise InputError(f"{option}: cannot fill in {text!r} ({exc}); write {{{{ and }}}} for literal "
                         "braces") from None


def command_env(values: Mapping[str, str]) -> dict[str, str]:
    """hnmine's environment plus HNMINE_<NAME> for every placeholder (the fault-injection hook left out)."""
    env = {key: value for key, value in os.environ.items() if key != "HNMINE_FAULT"}
    env.update({f"HNMINE_{name.upper()}": value for name, value in values.items()})
    return env


def _libc_prctl() -> Callable[..., int] | None:
    """prctl(2), looked up before any fork (the child may only call it); None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when hnmine's thread that started it dies."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _describe(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


def _pump(stream: IO[bytes], label: str, log: Callable[[str], None], tail: deque[str] | None) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        log(f"{label}: {line}")
        if tail is not None and line.strip():
            tail.append(line.strip())
    stream.close()


def _signal_group(pid: int, sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the command's process group, SIGKILL after the grace period."""
    _signal_group(proc.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=GRACE_SECONDS)
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


class _Terminated(SystemExit):
    """hnmine received SIGTERM while a command ran: stop it, then exit 143 (128 + SIGTERM)."""


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM raises :class:`_Terminated` (so the command is stopped first) while a command runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise _Terminated(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_command(argv: list[str], *, label: str, env: Mapping[str, str], timeout: float | None,
                timeout_option: str, log: Callable[[str], None]) -> float:
    """Run ``argv`` to its end, streaming its output to ``log`` as ``"<label>: <line>"``; its seconds.

    Raises :class:`CommandFailedError` (one line: what happened, the exit code or signal, the last
    lines of stderr) if it cannot start, exits non-zero, is killed or runs past ``timeout`` seconds.
    """
    started = time.perf_counter()
    log(f"{label}: running {shlex.join(argv)}")
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=dict(env), start_new_session=True, preexec_fn=_die_with_parent)
    except OSError as exc:
        raise CommandFailedError(f"{label}: cannot start {argv[0]!r} ({exc.strerror or exc})") from None
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    assert proc.stdout is not None and proc.stderr is not None
    readers = [threading.Thread(target=_pump, args=(proc.stdout, label, log, None), daemon=True),
               threading.Thread(target=_pump, args=(proc.stderr, label, log, tail), daemon=True)]
    for reader in readers:
        reader.start()
    timed_out = False
    try:
        with _sigterm_raises():
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                _stop(proc)
    except BaseException:
        _stop(proc)
        raise
    finally:
        _signal_group(proc.pid, signal.SIGKILL)  # whatever the command left running in its group
        for reader in readers:
            reader.join(timeout=GRACE_SECONDS)
    seconds = time.perf_counter() - started
    quoted = "; last stderr lines: " + " | ".join(tail) if tail else "; no stderr output"
    if timed_out:
        raise CommandFailedError(f"{label}: timed out after {timeout:g} s ({timeout_option}) and was stopped"
                                 f"{quoted}")
    if proc.returncode != 0:
        raise CommandFailedError(f"{label}: {argv[0]} {_describe(proc.returncode)}{quoted}")
    log(f"{label}: done in {seconds:.1f} s")
    return seconds
