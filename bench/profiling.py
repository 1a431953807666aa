"""Optional py-spy profiles of our broker, one per scenario (`--profile DIR`).

Writes DIR/<scenario>.txt in py-spy's raw (collapsed stacks) format and
DIR/<scenario>.top.txt, the functions with the most samples, self and total.
A cluster's other nodes get theirs beside the router's: DIR/<scenario>.<node>.txt.
py-spy must be installed (`pip install py-spy`) and allowed to attach.
"""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Final

from .processes import STARTED, stop
from .targets import Target

RATE: Final = 200  # samples per second
TOP: Final = 25


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    return found


class Profiler:
    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.exe = py_spy()
        self.recording: list[tuple[subprocess.Popen[bytes], Path]] = []  # (py-spy, its output)

    def start(self, scenario: str, target: Target) -> None:
        self.stop()
        named = {"": target.process, **target.peers}
        for node, process in named.items():
            if process is None:
                continue
            out = self.directory / (f"{scenario}.{node}.txt" if node else f"{scenario}.txt")
            args = [self.exe, "record", "--pid", str(process.pid), "--rate", str(RATE), "--format", "raw", "-o", str(out)]
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            STARTED.append(proc)
            self.recording.append((proc, out))

    def stop(self) -> None:
        recording, self.recording = self.recording, []
        for proc, _ in recording:
            stop(proc, sig=signal.SIGINT)
        for _, out in recording:
            if out.exists():
                out.with_suffix(".top.txt").write_text(top_functions(out))


def top_functions(raw: Path) -> str:
    """Functions by samples: self (leaf) and total (anywhere on the stack)."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    lines = [f"{samples} samples", "", "self %  function"]
    lines += [f"{100 * n / samples:5.1f}  {name}" for name, n in own.most_common(TOP)] if samples else []
    lines += ["", "total %  function"]
    lines += [f"{100 * n / samples:5.1f}  {name}" for name, n in total.most_common(TOP)] if samples else []
    return "\n".join(lines) + "\n"
