"""Write a real DeepSpeed ZeRO checkpoint folder, laid out as Lightning's DeepSpeedStrategy writes it,
from a Lightning ``.ckpt`` of a PolicyModule (used by tests/eval/test_evaluate.py in a subprocess).

    python tests/_make_deepspeed_ckpt.py SRC.ckpt OUT.ckpt STAGE

Lightning wraps the module (``_forward_module.``-prefixed keys) and saves with
``engine.save_checkpoint(path, client_state=<checkpoint without state_dict/optimizer_states>,
tag="checkpoint")``; this does the same on CPU with gloo (Lightning's strategy itself needs CUDA).
"""

import os
import sys
from pathlib import Path

import torch

os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
for k, v in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"), ("DS_ACCELERATOR", "cpu")):
    os.environ.setdefault(k, v)

import deepspeed  # noqa: E402

from r1aqa_pl.eval.checkpoints import _load_lightning  # noqa: E402


class Wrapper(torch.nn.Module):  # what Lightning hands DeepSpeed: _LightningModuleWrapperBase
    def __init__(self, module):
        super().__init__()
        self._forward_module = module


def main(src: str, out: str, stage: int) -> None:
    module, _ = _load_lightning(Path(src))
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    client_state = {k: v for k, v in ckpt.items() if k not in ("state_dict", "optimizer_states")}
    deepspeed.init_distributed(dist_backend="gloo")
    model = Wrapper(module)
    config = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": stage},
              "optimizer": {"type": "AdamW", "params": {"lr": 1e-6, "torch_adam": True}}}
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
    engine.save_checkpoint(out, client_state=client_state, tag="checkpoint")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
