"""What GRPO and SFT share: the policy and its family adapter, prompts, greedy answers for
evaluation, the optimizer with the paper's linear decay, and the Hugging Face export."""

from __future__ import annotations

import copy
import math

import lightning as L
import torch
from torch import Tensor

from r1aqa_pl import answer_format
from r1aqa_pl.models import Dtype, PolicyFamily, load_policy
from r1aqa_pl.records import Question
from r1aqa_pl.rollout import RolloutEngine, make_engine
from r1aqa_pl.training import strategy


class PolicyModule(L.LightningModule):
    """What GRPO and SFT share: the policy and processor, prompts, greedy answers for evaluation,
    the optimizer with the paper's linear decay, and the Hugging Face export."""

    def __init__(
        self,
        model_name_or_path: str,
        family: str | None = None,
        engine: str = "hf",
        dtype: Dtype = "float32",
        attn_implementation: str | None = None,
        gradient_checkpointing: bool = False,
        lora: dict | None = None,
        template: str = "plain",
        think: bool = False,
        with_audio: bool = True,
        lr: float = 1e-6,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        max_grad_norm: float = 1.0,
        eval_max_new_tokens: int = 256,
        eval_stop_at_answer: bool = True,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.policy = None
        self.processor = None
        self.family: PolicyFamily | None = None  # set with the policy: from the checkpoint's model_type or ``family``
        self.engine: RolloutEngine = make_engine(engine)
        # ``think`` is the paper's one switch: the think prompt (and, in GRPO, the think format reward)
        self.template = "think" if think and template == "plain" else template

    # -- model ------------------------------------------------------------------------------
    def configure_model(self) -> None:
        """Load lazily so that a sharded strategy (DeepSpeed ZeRO-3) sees the model being built."""
        if self.policy is not None:
            return
        h = self.hparams
        self._hf_ds_config = strategy.zero3_hf_config(self)  # ZeRO-3: from_pretrained partitions while loading
        self.policy, self.processor, self.family = load_policy(
            h.model_name_or_path, h.dtype, h.attn_implementation, h.gradient_checkpointing, h.lora, h.family
        )
        self.policy.train()  # from_pretrained returns eval mode; Lightning switches for validation
        self.suppress_ids = self.family.structural_token_ids(self.processor)
        self.eos_ids = list(self.policy.generation_config.eos_token_id or [])
        if isinstance(self.policy.generation_config.eos_token_id, int):
            self.eos_ids = [self.policy.generation_config.eos_token_id]

    def encode(self, questions: list[Question], audio: list) -> dict[str, Tensor]:
        inputs = self.family.encode(self.processor, questions, audio, self.template, self.hparams.with_audio)
        dtype = next(self.policy.parameters()).dtype
        return {k: (v.to(self.device, dtype) if v.is_floating_point() else v.to(self.device))
                for k, v in inputs.items()}

    def decode(self, ids: Tensor) -> list[str]:
        return self.processor.batch_decode(ids, skip_special_tokens=True)

    @torch.no_grad()
    def answer(self, questions: list[Question], audio: list) -> list[str]:
        """Greedy answers for evaluation, stopping at EOS or right after the answer's closing tag."""
        inputs = self.encode(questions, audio)
        stop = answer_format.STOP if self.hparams.eval_stop_at_answer else None
        was_training = self.policy.training
        self.policy.eval()
        with strategy.generation_context(self) as sync:  # ZeRO-3: gathered weights
            ids = self.engine.answer(self.family, self.policy, inputs, self.processor.tokenizer, stop,
                                     suppress_tokens=self.suppress_ids,
                                     max_new_tokens=self.hparams.eval_max_new_tokens, **sync)
        self.policy.train(was_training)
        texts = self.decode(ids)
        if stop:  # a row may run a token or two past its stop
            texts = [answer_format.cut_at_stop(t) for t in texts]
        return [t.strip() for t in texts]

    def describe_evaluation(self, q: Question) -> dict:
        """How :meth:`answer` answers (for the record beside a prediction file): the model, its family,
        the prompt template and ``q``'s rendered prompt, and the decoding settings."""
        from r1aqa_pl import prompts

        h = self.hparams
        return {
            "model": h.model_name_or_path, "family": self.family.name if self.family else h.family,
            "dtype": str(next(self.policy.parameters()).dtype).replace("torch.", ""),
            "template": self.template, "template_text": prompts.TEMPLATES.get(self.template, self.template),
            "with_audio": h.with_audio,
            "first_prompt": self.family.render(self.processor, q, self.template, h.with_audio),
            "decoding": {"strategy": "greedy", "max_new_tokens": h.eval_max_new_tokens, "engine": h.engine,
                         "stop": answer_format.STOP if h.eval_stop_at_answer else None,
                         "suppressed_token_ids": len(self.suppress_ids)},
        }

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        """Generation and scoring happen in :class:`r1aqa_pl.benchmarks.callback.BenchmarkEvaluation`."""

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        """See :meth:`validation_step`."""

    # -- optimisation -----------------------------------------------------------------------
    def total_optimizer_steps(self) -> int:
        if self.trainer.max_steps and self.trainer.max_steps > 0:
            return self.trainer.max_steps
        return max(1, math.ceil(self.trainer.estimated_stepping_batches / self.accumulation()))

    def accumulation(self) -> int:
        return 1

    def configure_optimizers(self):
        """AdamW with linear decay to zero after an optional warm-up (the TRL defaults the paper used)."""
        params = [p for p in self.policy.parameters() if p.requires_grad]
        opt = strategy.adamw(self, params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total, warm = self.total_optimizer_steps(), self.hparams.warmup_steps

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return max(0.0, (total - step) / max(1, total - warm))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def clip_and_check(self) -> tuple[Tensor, bool]:
        """Global gradient norm (clipped to ``max_grad_norm``) and whether every gradient is finite."""
        if strategy.is_deepspeed(self):  # the engine clips (config gradient_clipping) inside step()
            return torch.zeros((), device=self.device), True
        params = [p for p in self.policy.parameters() if p.grad is not None]
        if not params:
            return torch.zeros(()), True
        max_norm = self.hparams.max_grad_norm or float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        return norm.detach(), bool(torch.isfinite(norm))

    # -- checkpoints ------------------------------------------------------------------------
    def export_hf(self, out_dir: str, checkpoint_path: str | None = None) -> None:
        """``save_pretrained`` of the policy (LoRA merged) and processor, loadable by ``models.load_policy``.

        Under ZeRO-3 the weights are partitioned: they are consolidated from the Lightning checkpoint
        just written (``checkpoint_path``; by default ``out_dir`` with ``_hf`` replaced by ``.ckpt``).
        """
        model, state_dict = self.policy, None
        if strategy.zero_stage(self) == 3:
            ckpt = checkpoint_path or (out_dir[:-3] + ".ckpt" if out_dir.endswith("_hf") else None)
            state_dict = strategy.zero3_state_dict(ckpt, dtype=getattr(torch, self.hparams.dtype))
        elif hasattr(model, "merge_and_unload"):
            model = copy.deepcopy(model).merge_and_unload()
        model.save_pretrained(out_dir, state_dict=state_dict)
        self.processor.save_pretrained(out_dir)
