"""What GRPO and SFT share: the policy and its family adapter, prompts, greedy answers for
evaluation, the optimizer with the paper's linear decay, and the Hugging Face export."""

from __future__ import annotations

import copy
import math
from dataclasses import asdict

import lightning as L
import torch
from torch import Tensor

from r1aqa_pl.models import PolicyFamily, load_policy
from r1aqa_pl.registry import spec
from r1aqa_pl.rollout import ENGINES, EngineName, RolloutEngine
from r1aqa_pl.task import answer_format, prompts
from r1aqa_pl.task.question import Question
from r1aqa_pl.training import strategy
from r1aqa_pl.training.config import Evaluation, Optimization, Policy, group


class PolicyModule(L.LightningModule):
    """What GRPO and SFT share: the policy and processor, prompts, greedy answers for evaluation,
    the optimizer with the paper's linear decay, and the Hugging Face export."""

    def __init__(
        self,
        policy: Policy,
        optimization: Optimization = Optimization(),
        evaluation: Evaluation = Evaluation(),
        engine: EngineName | RolloutEngine = "hf",
    ):
        """
        Args:
            policy: the checkpoint and how its forward passes run (a model path alone is accepted).
            optimization: the optimizer step.
            evaluation: greedy answers for validation and ``r1aqa eval``.
            engine: the rollout engine: a registered name (hf) or the class path of a ``RolloutEngine`` subclass.
        """
        super().__init__()
        self.policy_config = group(Policy, policy)
        self.optimization = group(Optimization, optimization)
        self.evaluation = group(Evaluation, evaluation)
        self.engine: RolloutEngine = ENGINES.build(engine)
        self.save_hyperparameters(self.hyperparameters())
        self.policy = None
        self.processor = None
        self.family: PolicyFamily | None = None  # set with the policy: from the checkpoint's model_type or ``family``
        p = self.policy_config
        # ``think`` is the paper's one switch: the think prompt (and, in GRPO, the think format reward)
        self.template = "think" if p.think and p.template == "plain" else p.template

    def hyperparameters(self) -> dict:
        """What checkpoints and ``hparams.yaml`` record: plain values (groups as dicts, seams as class paths)
        that rebuild this module, ``load_from_checkpoint`` included."""
        return {"policy": asdict(self.policy_config), "optimization": asdict(self.optimization),
                "evaluation": asdict(self.evaluation), "engine": spec(self.engine)}

    def setup(self, stage: str) -> None:
        strategy.destroy_process_group_at_exit()

    def on_fit_start(self) -> None:
        self.check_clips()

    def check_clips(self) -> None:
        """Questions over more clips than the family takes stop the run now, not at the batch that holds one."""
        most, dm = self.family.max_clips, getattr(self.trainer, "datamodule", None)
        if most is None or dm is None or not self.policy_config.with_audio:
            return
        for split, ds in getattr(dm, "datasets", {}).items():
            over = [q for q in getattr(ds, "questions", []) if len(q.clips) > most]
            if over:
                raise ValueError(
                    f"{over[0].source or over[0].id}: {len(over)} {split} question(s) over more than {most} clip(s), "
                    f"which {self.family.name} does not take in one question: set data.init_args.max_clips {most} "
                    "to leave them out (counted in the log), or use a family that takes several clips")

    # -- model ------------------------------------------------------------------------------
    def configure_model(self) -> None:
        """Load lazily so that a sharded strategy (DeepSpeed ZeRO-3) sees the model being built."""
        if self.policy is not None:
            return
        p = self.policy_config
        self._hf_ds_config = strategy.zero3_hf_config(self)  # ZeRO-3: from_pretrained partitions while loading
        self.policy, self.processor, self.family = load_policy(
            p.model_name_or_path, p.dtype, p.attn_implementation, p.gradient_checkpointing, p.lora, p.family
        )
        self.policy.train()  # from_pretrained returns eval mode; Lightning switches for validation
        self.suppress_ids = self.family.structural_token_ids(self.processor)
        self.eos_ids = list(self.policy.generation_config.eos_token_id or [])
        if isinstance(self.policy.generation_config.eos_token_id, int):
            self.eos_ids = [self.policy.generation_config.eos_token_id]

    def encode(self, questions: list[Question], audio: list, with_audio: bool | None = None) -> dict[str, Tensor]:
        """The prompts' tensors on the device; ``with_audio`` (default ``policy.with_audio``) false leaves the audio
        out (the same prompt, its audio turn removed)."""
        with_audio = self.policy_config.with_audio if with_audio is None else with_audio
        inputs = self.family.encode(self.processor, questions, audio, self.template, with_audio)
        dtype = next(self.policy.parameters()).dtype
        return {k: (v.to(self.device, dtype) if v.is_floating_point() else v.to(self.device))
                for k, v in inputs.items()}

    def decode(self, ids: Tensor) -> list[str]:
        return self.processor.batch_decode(ids, skip_special_tokens=True)

    @torch.no_grad()
    def answer(self, questions: list[Question], audio: list) -> list[str]:
        """Greedy answers for evaluation, stopping at EOS or right after the answer's closing tag."""
        inputs = self.encode(questions, audio)
        stop = answer_format.STOP if self.evaluation.stop_at_answer else None
        was_training = self.policy.training
        self.policy.eval()
        with strategy.generation_context(self) as sync:  # ZeRO-3: gathered weights
            ids = self.engine.answer(self.family, self.policy, inputs, self.processor.tokenizer, stop,
                                     suppress_tokens=self.suppress_ids,
                                     max_new_tokens=self.evaluation.max_new_tokens, **sync)
        self.policy.train(was_training)
        texts = self.decode(ids)
        if stop:  # a row may run a token or two past its stop
            texts = [answer_format.cut_at_stop(t) for t in texts]
        return [t.strip() for t in texts]

    @torch.no_grad()
    def sample_answers(self, questions: list[Question], audio: list, k: int, temperature: float) -> list[list[str]]:
        """``k`` sampled answers per question (``r1aqa eval --samples``): plain temperature sampling from the whole
        distribution (top_p 1, top_k 0), stopping as :meth:`answer` does. Seed torch's generator before the call."""
        from transformers import StoppingCriteriaList

        from r1aqa_pl.rollout.hf import StopAfterText  # a generate kwarg, as the engine's own answer passes it

        inputs = self.encode(questions, audio)
        stop = answer_format.STOP if self.evaluation.stop_at_answer else None
        prompt = inputs["input_ids"].shape[1]
        extra = {"stopping_criteria": StoppingCriteriaList([StopAfterText(self.processor.tokenizer, prompt, stop)])
                 } if stop else {}
        was_training = self.policy.training
        self.policy.eval()
        with strategy.generation_context(self) as sync:
            ids = self.engine.sample(self.family, self.policy, inputs, k, share_prompt=self.policy_config.share_prompt,
                                     do_sample=True, temperature=temperature, top_p=1.0, top_k=0,
                                     suppress_tokens=self.suppress_ids, max_new_tokens=self.evaluation.max_new_tokens,
                                     **extra, **sync)
        self.policy.train(was_training)
        texts = [(answer_format.cut_at_stop(t) if stop else t).strip() for t in self.decode(ids)]
        return [texts[b * k:(b + 1) * k] for b in range(len(questions))]

    def describe_evaluation(self, q: Question) -> dict:
        """How :meth:`answer` answers (for the record beside a prediction file): the model, its family,
        the prompt template and ``q``'s rendered prompt, and the decoding settings."""
        p, ev = self.policy_config, self.evaluation
        return {
            "model": p.model_name_or_path, "family": self.family.name if self.family else p.family,
            "dtype": str(next(self.policy.parameters()).dtype).replace("torch.", ""),
            "template": self.template, "template_text": prompts.TEMPLATES.get(self.template, self.template),
            "with_audio": p.with_audio,
            "first_prompt": self.family.render(self.processor, q, self.template, p.with_audio),
            "decoding": {"strategy": "greedy", "max_new_tokens": ev.max_new_tokens,
                         "engine": vars(type(self.engine)).get("registered_as") or spec(self.engine)["class_path"],
                         "stop": answer_format.STOP if ev.stop_at_answer else None,
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
        o = self.optimization
        opt = strategy.adamw(self, params, lr=o.lr, weight_decay=o.weight_decay)
        total, warm = self.total_optimizer_steps(), o.warmup_steps

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
        max_norm = self.optimization.max_grad_norm or float("inf")
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
            state_dict = strategy.zero3_state_dict(ckpt, dtype=getattr(torch, self.policy_config.dtype))
        elif hasattr(model, "merge_and_unload"):
            model = copy.deepcopy(model).merge_and_unload()
        model.save_pretrained(out_dir, state_dict=state_dict)
        self.processor.save_pretrained(out_dir)
