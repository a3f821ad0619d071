"""Two machines simulated on this one: two torchrun agents of 2 processes each, rendezvous on localhost.

Checks what docs/modes.md's "Several machines" section promises: the default mesh puts Ulysses inside a node (its
ranks share the agent, i.e. the machine) and the ring / cfg groups across nodes, and the result equals one
process (fp32 relative 1e-5) for ring 2 x Ulysses 2 and for cfg 2 x Ulysses 2.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = textwrap.dedent('''
    import os
    import torch
    import torch.distributed as dist
    from cp_hooks import ContextParallelConfig, init_distributed, shutdown_distributed
    from cp_hooks.verify.catalogue import get_entry
    from cp_hooks.verify.checker import compare_parallel

    init_distributed()
    node = int(os.environ["GROUP_RANK"])  # the agent (machine) this process runs on
    for kwargs in (dict(ring_degree=2, ulysses_degree=2), dict(cfg_degree=2, ulysses_degree=2)):
        config = ContextParallelConfig(**kwargs).setup()
        runtime = config.runtime
        nodes = [None] * 2
        dist.all_gather_object(nodes, node, group=runtime.ulysses_group)
        assert nodes == [node, node], f"a Ulysses group spans machines: {nodes}"
        across = runtime.ring_group if runtime.ring_degree > 1 else runtime.cfg_group
        dist.all_gather_object(nodes, node, group=across)
        assert sorted(nodes) == [0, 1], f"a ring / cfg group stays on one machine: {nodes}"
        model, inputs = get_entry("PixArtTransformer2DModel").build()  # a batch of 2: cfg splits it
        worst = max(d.rel for d in compare_parallel(model, inputs, config))
        assert worst <= 1e-5, worst
        # One file per rank and layout: the two ranks of an agent share its stdout, and their lines can
        # interleave on one line there.
        name = "_".join(f"{k}{v}" for k, v in kwargs.items())
        with open(f"result_rank{dist.get_rank()}_{name}.txt", "w") as f:
            f.write(f"node {node}: rel {worst:.2e}\\n")
    shutdown_distributed()
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_of_two_processes(tmp_path):
    pytest.importorskip("diffusers")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    agents = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "2",
         "--node_rank", str(node), "--master_addr", "127.0.0.1", "--master_port", str(port), str(script)],
        cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for node in (0, 1)]
    outputs = []
    for agent in agents:
        try:
            outputs.append(agent.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for a in agents:
                a.kill()
            raise
    assert all(a.returncode == 0 for a in agents), "\n".join(o[-3000:] for o in outputs)
    results = sorted(p.name for p in tmp_path.glob("result_rank*.txt"))
    assert len(results) == 8, (results, "\n".join(outputs))  # 4 ranks x 2 layouts
