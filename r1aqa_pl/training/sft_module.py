"""The supervised baseline: cross-entropy on the right answer, the prompt masked out."""

from __future__ import annotations

import torch
from torch import Tensor

from r1aqa_pl.algo.logprobs import completion_logprobs
from r1aqa_pl.rollout import EngineName, RolloutEngine
from r1aqa_pl.task import answer_format
from r1aqa_pl.task.question import Question
from r1aqa_pl.training import resume, strategy
from r1aqa_pl.training.config import Evaluation, Optimization, Policy
from r1aqa_pl.training.policy_module import PolicyModule


class SFTModule(PolicyModule):
    """Supervised baseline: cross-entropy on the target answer only (the prompt is masked out)."""

    def __init__(self, policy: Policy, optimization: Optimization = Optimization(),
                 evaluation: Evaluation = Evaluation(), engine: EngineName | RolloutEngine = "hf",
                 target: str | list[str] = answer_format.SFT_TARGET):
        """
        Args:
            policy: the checkpoint and how its forward passes run (a model path alone is accepted).
            optimization: the optimizer (gradient accumulation is the trainer's ``accumulate_grad_batches``).
            evaluation: greedy answers for validation and ``r1aqa eval``.
            engine: the engine that generates the validation answers.
            target: the text trained on, formatted with ``answer``, ``choices``, ``question`` and ``options`` (the
                choices joined by spaces); or several, one drawn per question each time it is trained on (torch's
                seeded RNG), e.g. ``answer_format.THINK_SFT_TARGETS``: a warm start that thinks at several lengths.
        """
        self.target = target if isinstance(target, str) else list(target)
        super().__init__(policy, optimization, evaluation, engine)

    def hyperparameters(self) -> dict:
        return {**super().hyperparameters(), "target": self.target}

    def targets(self, questions: list[Question]) -> tuple[Tensor, Tensor]:
        """Target ids (right-padded, each ending in EOS) and their mask."""
        tok = self.processor.tokenizer
        forms = [self.target] if isinstance(self.target, str) else self.target
        drawn = torch.randint(len(forms), (len(questions),)).tolist() if len(forms) > 1 else [0] * len(questions)
        texts = [forms[k].format(answer=q.answer, choices=q.choices, question=q.question, options=" ".join(q.choices))
                 for k, q in zip(drawn, questions)]
        ids = [tok(t, add_special_tokens=False).input_ids + [self.eos_ids[0]] for t in texts]
        T = max(map(len, ids))
        pad = tok.pad_token_id
        out = torch.tensor([x + [pad] * (T - len(x)) for x in ids], device=self.device)
        mask = torch.tensor([[1] * len(x) + [0] * (T - len(x)) for x in ids], device=self.device)
        return out, mask

    def sft_loss(self, batch) -> Tensor:
        inputs = self.encode(batch["questions"], batch["audio"])
        target_ids, mask = self.targets(batch["questions"])
        logp = completion_logprobs(self.family, self.policy, inputs, target_ids, mask, G=1)
        return -(logp * mask).sum() / mask.sum()

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """``max_grad_norm`` unless the trainer sets ``gradient_clip_val``; DeepSpeed clips via its config."""
        if strategy.is_deepspeed(self):
            return
        self.clip_gradients(optimizer, gradient_clip_val or self.optimization.max_grad_norm,
                            gradient_clip_algorithm or "norm")

    # -- resume on another world size or batch size (Lightning restores the rest) -------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["sft_resume"] = resume.save_world(self)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """The data position in prompts when the processes or the batch size changed (Lightning's per-rank batch
        count would skip or repeat prompts on another sharding)."""
        resume.load_world(self, checkpoint.get("sft_resume"), checkpoint)

    def training_step(self, batch, batch_idx):
        loss = self.sft_loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        self.log("step", float(self.global_step + 1))  # the loggers' x: the optimizer step this batch ends
        return loss
