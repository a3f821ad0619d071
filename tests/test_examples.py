"""The example scripts, run as users run them: 2 CPU processes under torchrun / accelerate launch.

Each test starts the script's default (tiny random models, built offline) in a subprocess with a timeout,
then checks the parity line the script prints (context parallel vs. the same run in one process, fp32,
tolerance 1e-5 relative to max(1, |reference|)) and the files it saves. The processes are forced onto the
CPU (gloo) so the tests mean the same on machines with GPUs.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT_S = 240
FP32_TOL = 1e-5
_PARITY = re.compile(r"max \|[^|]*context parallel - single process\|[^=]*= ([0-9.e+-]+) .*: (PASS|FAIL)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(script: str, nproc: int, *args: str, launcher: str = "torchrun", cwd: Path) -> str:
    """Run examples/`script` on `nproc` CPU processes; return its output, or fail with it.

    The launcher and its workers run in their own process group, killed as a whole on timeout so that no
    rank is left behind.
    """
    port = str(_free_port())
    if launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               "--master_addr=127.0.0.1", f"--master_port={port}"]
    else:  # --multi_gpu is what makes accelerate start N processes on a machine without GPUs
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", f"--num_processes={nproc}",
               "--num_machines=1", "--mixed_precision=no", "--dynamo_backend=no", f"--main_process_port={port}"]
    cmd += [str(EXAMPLES / script), *args]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"{script} did not finish within {TIMEOUT_S}s:\n{output[-4000:]}")
    if proc.returncode != 0:
        pytest.fail(f"{script} exited with status {proc.returncode}:\n{output[-4000:]}")
    return output


def parity(output: str) -> list[float]:
    """The differences of every parity line (one per data-parallel group); each must say PASS."""
    found = _PARITY.findall(output)
    assert found, f"no parity line in the output:\n{output[-4000:]}"
    for err, verdict in found:
        assert verdict == "PASS" and float(err) <= FP32_TOL, f"parity {err} ({verdict}):\n{output[-4000:]}"
    return [float(err) for err, _ in found]


def test_generate_flux_under_accelerate(tmp_path):
    output = launch("generate.py", 2, "--output", "cat.png", launcher="accelerate", cwd=tmp_path)
    assert len(parity(output)) == 1
    assert "seconds per step" in output
    assert output.count("100%") >= 1 and "rank 1: saved" not in output  # progress and saving on rank 0
    with Image.open(tmp_path / "cat.png") as image:
        assert image.size == (128, 128)


def test_generate_video_wan(tmp_path):
    output = launch("generate_video.py", 2, cwd=tmp_path)
    assert len(parity(output)) == 1
    with Image.open(tmp_path / "video.gif") as video:
        assert video.n_frames == 9 and video.size == (64, 64)


def test_train_flux(tmp_path):
    output = launch("train.py", 2, "--output-dir", "trained", launcher="accelerate", cwd=tmp_path)
    assert len(parity(output)) == 1
    assert len(re.findall(r"^step \d+: loss", output, re.M)) == 3  # logged once (rank 0), per step
    assert (tmp_path / "trained" / "config.json").is_file()
    assert (tmp_path / "trained" / "diffusion_pytorch_model.safetensors").is_file()
