"""The README's main job (examples/flux_parity.py) under accelerate launch and torchrun, 2 CPU processes."""

import re

import pytest

from test_examples import launch

_LINE = re.compile(r"max \|context parallel - single process\| = ([0-9.e+-]+) \(relative ([0-9.e+-]+), "
                   r"tolerance ([0-9.e+-]+)\): (PASS|FAIL)")


@pytest.mark.parametrize(
    "launcher,args",
    [
        ("accelerate", []),  # the README's first command, at its default size
        ("torchrun", ["--ring", "2", "--rotate-method", "alltoall", "--height", "9", "--width", "7", "--text-len", "5",
                      "--anything", "--repeats", "1"]),
    ],
)
def test_main_job_prints_parity_and_times(tmp_path, launcher, args):
    output = launch("flux_parity.py", 2, *args, launcher=launcher, cwd=tmp_path)
    match = _LINE.search(output)
    assert match, output[-2000:]
    relative, tolerance, verdict = float(match.group(2)), float(match.group(3)), match.group(4)
    assert verdict == "PASS" and relative <= tolerance == 1e-5
    assert re.search(r"time per forward: single process [0-9.]+ ms, context parallel [0-9.]+ ms", output)
