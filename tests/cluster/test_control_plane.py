"""The test control plane itself: nothing it starts outlives the process that started it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swarm.testing.control_plane import missing_binaries

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

STARTER = """
import sys, time
from pathlib import Path
from swarm.testing.control_plane import ControlPlane
plane = ControlPlane(Path(sys.argv[1])).start()
print(" ".join(str(p.pid) for p in plane.procs.values()), flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is dead, only not yet reaped
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_killed_test_process_leaves_no_control_plane_behind(tmp_path: Path) -> None:
    if missing_binaries():
        pytest.skip("control-plane binaries not built: run make cluster-bins")
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        line = starter.stdout.readline() if starter.stdout else ""
        pids = [int(p) for p in line.split()]
        assert len(pids) == 5 and all(alive(p) for p in pids), line
        starter.send_signal(signal.SIGKILL)  # no cleanup code runs: only the parent-death signal is left
        starter.wait(10)
        deadline = time.monotonic() + 20
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in pids if alive(p)]
    finally:
        if starter.poll() is None:
            starter.kill()
