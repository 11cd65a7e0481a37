"""scripts/slurm_grpo.sbatch: the command it hands to srun resolves through the CLI and keeps the paper's 16 prompts
per optimizer step on 1, 2 and 4 nodes (srun replaced by a stand-in that adds --print_config; no GPU, no SLURM)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("nodes, accumulation, prompts", [(1, 2, 16), (2, 1, 16), (4, 1, 32)])
def test_sbatch_script_keeps_16_prompts_per_step(tmp_path, nodes, accumulation, prompts):
    srun = tmp_path / "srun"
    srun.write_text('#!/bin/bash\nexec "$@" --print_config\n')
    srun.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "SLURM_NNODES": str(nodes),
           "PY": sys.executable, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(["bash", "scripts/slurm_grpo.sbatch"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    cfg = yaml.safe_load("\n".join(line for line in res.stdout.splitlines() if not line.startswith("[20")))
    t, m, d = cfg["trainer"], cfg["model"]["init_args"], cfg["data"]["init_args"]
    accum = m["optimization"]["gradient_accumulation_steps"]
    assert (t["num_nodes"], int(t["devices"]), accum) == (nodes, 8, accumulation)
    assert t["num_nodes"] * int(t["devices"]) * d["batch_size"] * accum == prompts
    assert t["val_check_interval"] == 100 * accum  # batches: every 100 optimizer steps
    assert ("prompts per optimizer step (the paper: 16)" in res.stderr) == (prompts != 16)
