"""LightningModules: a shared policy base, GRPO (the paper) and the SFT baseline.

GRPO per optimizer step (manual optimization): roll out G completions per prompt, score them,
normalise rewards within each group, then update with the clipped surrogate and a k3 KL penalty to
the frozen initial policy. The mathematics lives in :mod:`r1aqa_pl.grpo`; this file orchestrates.
"""

from __future__ import annotations

import copy
import math
import re
from collections import defaultdict
from contextlib import nullcontext

import lightning as L
import torch
from torch import Tensor

from r1aqa_pl import distributed, grpo, policy, rewards
from r1aqa_pl.model import Dtype, load_policy, structural_token_ids
from r1aqa_pl.records import Question


class PolicyModule(L.LightningModule):
    """What GRPO and SFT share: the policy and processor, prompts, greedy answers for evaluation,
    the optimizer with the paper's linear decay, and the Hugging Face export."""

    def __init__(
        self,
        model_name_or_path: str,
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
        # ``think`` is the paper's one switch: the think prompt (and, in GRPO, the think format reward)
        self.template = "think" if think and template == "plain" else template

    # -- model ------------------------------------------------------------------------------
    def configure_model(self) -> None:
        """Load lazily so that sharded strategies (DeepSpeed, FSDP) see the model being built."""
        if self.policy is not None:
            return
        h = self.hparams
        self._hf_ds_config = distributed.zero3_hf_config(self)  # ZeRO-3: from_pretrained partitions while loading
        self.policy, self.processor = load_policy(
            h.model_name_or_path, h.dtype, h.attn_implementation, h.gradient_checkpointing, h.lora
        )
        self.policy.train()  # from_pretrained returns eval mode; Lightning switches for validation
        self.suppress_ids = structural_token_ids(self.processor)
        self.eos_ids = list(self.policy.generation_config.eos_token_id or [])
        if isinstance(self.policy.generation_config.eos_token_id, int):
            self.eos_ids = [self.policy.generation_config.eos_token_id]

    def encode(self, questions: list[Question], audio: list) -> dict[str, Tensor]:
        inputs = policy.encode_prompts(self.processor, questions, audio, self.template, self.hparams.with_audio)
        dtype = next(self.policy.parameters()).dtype
        return {k: (v.to(self.device, dtype) if v.is_floating_point() else v.to(self.device))
                for k, v in inputs.items()}

    def decode(self, ids: Tensor) -> list[str]:
        return self.processor.batch_decode(ids, skip_special_tokens=True)

    @torch.no_grad()
    def answer(self, questions: list[Question], audio: list) -> list[str]:
        """Greedy answers for evaluation, stopping at EOS or right after ``</answer>``."""
        inputs = self.encode(questions, audio)
        stop = "</answer>" if self.hparams.eval_stop_at_answer else None
        was_training = self.policy.training
        self.policy.eval()
        with distributed.generation_context(self) as sync:  # ZeRO-3 / FSDP: gathered weights, synced_gpus
            ids = policy.rollout(self.policy, inputs, 1, do_sample=False, suppress_tokens=self.suppress_ids,
                                 max_new_tokens=self.hparams.eval_max_new_tokens, stop_after=stop,
                                 tokenizer=self.processor.tokenizer, **sync)
        self.policy.train(was_training)
        texts = self.decode(ids)
        if self.hparams.eval_stop_at_answer:  # a row may run a token or two past its stop
            texts = [t[: t.index("</answer>") + 9] if "</answer>" in t else t for t in texts]
        return [t.strip() for t in texts]

    def validation_step(self, batch, batch_idx):
        """Generation and scoring happen in :class:`r1aqa_pl.callbacks.MMAUEvaluation`."""

    def test_step(self, batch, batch_idx):
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
        opt = distributed.adamw(self, params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total, warm = self.total_optimizer_steps(), self.hparams.warmup_steps

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return max(0.0, (total - step) / max(1, total - warm))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def clip_and_check(self) -> tuple[Tensor, bool]:
        """Global gradient norm (clipped to ``max_grad_norm``) and whether every gradient is finite."""
        if distributed.is_deepspeed(self):  # the engine clips (config gradient_clipping) inside step()
            return torch.zeros((), device=self.device), True
        params = [p for p in self.policy.parameters() if p.grad is not None]
        if not params:
            return torch.zeros(()), True
        max_norm = self.hparams.max_grad_norm or float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        return norm.detach(), bool(torch.isfinite(norm))

    # -- checkpoints ------------------------------------------------------------------------
    def export_hf(self, out_dir: str, checkpoint_path: str | None = None) -> None:
        """``save_pretrained`` of the policy (LoRA merged) and processor, loadable by ``load_policy``.

        Under ZeRO-3 the weights are partitioned: they are consolidated from the Lightning checkpoint
        just written (``checkpoint_path``; by default ``out_dir`` with ``_hf`` replaced by ``.ckpt``).
        """
        model, state_dict = self.policy, None
        if distributed.zero_stage(self) == 3:
            ckpt = checkpoint_path or (out_dir[:-3] + ".ckpt" if out_dir.endswith("_hf") else None)
            state_dict = distributed.zero3_state_dict(ckpt, dtype=getattr(torch, self.hparams.dtype))
        elif hasattr(model, "merge_and_unload"):
            model = copy.deepcopy(model).merge_and_unload()
        model.save_pretrained(out_dir, state_dict=state_dict)
        self.processor.save_pretrained(out_dir)


class GRPOModule(PolicyModule):
    """Group Relative Policy Optimization with manual optimization.

    ``gradient_accumulation_steps`` rollouts (batches) make one optimizer step; with
    ``num_iterations`` μ > 1 those rollouts are reused for μ optimizer steps against log-probs
    taken once before the first update (so the clipping can bite).
    """

    def __init__(
        self,
        model_name_or_path: str,
        G: int = 8,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 256,
        reward_weights: dict[str, float] | None = None,
        scale_rewards: str = "group",
        beta: float = 0.04,
        epsilon_low: float = 0.2,
        epsilon_high: float | None = None,
        loss_type: str = "grpo",
        num_iterations: int = 1,
        gradient_accumulation_steps: int = 1,
        micro_batch_prompts: int = 1,
        share_prompt: bool = True,
        max_bad_steps: int = 3,
        **policy_kwargs,
    ):
        super().__init__(model_name_or_path, **policy_kwargs)
        self.save_hyperparameters()
        self.reward_weights = dict(reward_weights or {"accuracy": 1.0, "format": 1.0})
        if self.hparams.think and "format" in self.reward_weights:
            self.reward_weights["think_format"] = self.reward_weights.pop("format")
        rewards.check_weights(self.reward_weights)
        grpo.aggregate(torch.zeros(1, 1), torch.ones(1, 1), loss_type)  # unknown loss_type fails at start-up
        self.automatic_optimization = False
        self.ref_policy = None
        self.buffer: list[dict] = []
        self.bad_steps = 0
        self.skipped_steps = 0

    def accumulation(self) -> int:
        return self.hparams.gradient_accumulation_steps

    def setup(self, stage: str) -> None:
        if stage == "fit":  # DeepSpeed: the engine clips at max_grad_norm; completions per rank and step
            dm = getattr(self.trainer, "datamodule", None)
            prompts = getattr(dm, "hparams", {}).get("batch_size", 1) if dm is not None else 1
            h = self.hparams
            distributed.configure_deepspeed(self, prompts * h.gradient_accumulation_steps * h.G)

    def configure_model(self) -> None:
        super().configure_model()
        if self.hparams.beta > 0 and self.ref_policy is None and not self.hparams.lora \
                and distributed.zero_stage(self) != 3:  # ZeRO-3: loaded unsharded in on_fit_start
            # kept out of the module tree: never trained, never checkpointed
            ref = copy.deepcopy(self.policy).eval().requires_grad_(False)
            object.__setattr__(self, "ref_policy", ref)

    def on_fit_start(self) -> None:
        if self.hparams.beta > 0 and self.ref_policy is None and not self.hparams.lora:
            object.__setattr__(self, "ref_policy", distributed.reference_copy(self))
        if self.ref_policy is not None:
            self.ref_policy.to(self.device)

    # -- exact resume (Lightning restores weights, optimizer, scheduler, loops and data position) ---
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Every rank's RNG state (rollouts sample from it) and rollouts still waiting for their step."""
        checkpoint["grpo_resume"] = distributed.resume_state(self, self.buffer)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._resume_rng, self.buffer = distributed.load_resume_state(self, checkpoint.get("grpo_resume"))

    def on_train_start(self) -> None:
        """Restore the RNG streams last, right before the first rollout after a resume."""
        if getattr(self, "_resume_rng", None) is not None:
            distributed.set_rng_state(self._resume_rng)
            self._resume_rng = None
        self.buffer = distributed.to_device(self.buffer, self.device)

    def reference(self):
        """(model, context): the frozen copy, or the LoRA policy with its adapter switched off."""
        if self.hparams.lora:
            return self.policy, self.policy.disable_adapter()
        return self.ref_policy, nullcontext()

    # -- rollout → reward → advantage ---------------------------------------------------------
    def make_rollout(self, batch) -> dict:
        h = self.hparams
        questions, audio = batch["questions"], batch["audio"]
        inputs = self.encode(questions, audio)
        with distributed.generation_context(self) as sync:  # ZeRO-3 / FSDP: gathered weights, synced_gpus
            completion_ids = policy.rollout(
                self.policy, inputs, h.G, h.share_prompt, do_sample=True, temperature=h.temperature, top_p=h.top_p,
                max_new_tokens=h.max_new_tokens, suppress_tokens=self.suppress_ids, **sync,
            )
        mask = policy.completion_mask(completion_ids, self.eos_ids)
        texts = self.decode(completion_ids)
        group_questions = [q for q in questions for _ in range(h.G)]  # aligned with the rows
        total, per_fn = rewards.score_completions(texts, group_questions, self.reward_weights)
        A = grpo.group_advantages(total, h.G, h.scale_rewards)
        ro = {"questions": questions, "inputs": inputs, "completion_ids": completion_ids, "mask": mask,
              "rewards": total, "per_fn": per_fn, "advantages": A.to(self.device), "texts": texts}
        ro["old_logp"] = self.logprobs(self.policy, ro, grad=False) if h.num_iterations > 1 else None
        ro["ref_logp"] = self.ref_logprobs(ro) if h.beta > 0 else None
        return ro

    def micro_batches(self, ro: dict):
        """Slices of whole groups (``micro_batch_prompts`` prompts × G completions)."""
        G, n = self.hparams.G, self.hparams.micro_batch_prompts
        B = ro["inputs"]["input_ids"].shape[0]
        for b0 in range(0, B, n):
            rows = slice(b0 * G, min(B, b0 + n) * G)
            yield {k: v[b0:b0 + n] for k, v in ro["inputs"].items()}, rows

    def logprobs(self, model, ro: dict, grad: bool) -> Tensor:
        """Completion log-probs of a whole rollout, micro-batch by micro-batch (no graph kept)."""
        out = []
        with torch.set_grad_enabled(grad):
            for inputs, rows in self.micro_batches(ro):
                out.append(policy.completion_logprobs(
                    model, inputs, ro["completion_ids"][rows], ro["mask"][rows], self.hparams.G,
                    self.hparams.temperature, self.hparams.share_prompt).detach())
        return torch.cat(out)

    def ref_logprobs(self, ro: dict) -> Tensor:
        model, ctx = self.reference()
        with ctx:
            return self.logprobs(model, ro, grad=False)

    # -- update -----------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        self.policy.train()
        self.buffer.append(self.make_rollout(batch))
        if len(self.buffer) < self.hparams.gradient_accumulation_steps:
            return
        rollouts, self.buffer = self.buffer, []
        for _ in range(self.hparams.num_iterations):
            self.update(rollouts)
        self.log_rollouts(rollouts)

    def update(self, rollouts: list[dict]) -> None:
        """One optimizer step over the buffered rollouts, gradients accumulated per micro-batch."""
        h = self.hparams
        opt, sched = self.optimizers(), self.lr_schedulers()
        totals = {
            "num_completions": sum(ro["mask"].shape[0] for ro in rollouts),
            "num_tokens": int(sum(ro["mask"].sum() for ro in rollouts)),
            "max_completion_length": h.max_new_tokens,
        }
        stats, loss_sum = defaultdict(list), torch.zeros((), device=self.device)
        n_micro, i_micro = sum(1 for ro in rollouts for _ in self.micro_batches(ro)), 0
        for ro in rollouts:
            for inputs, rows in self.micro_batches(ro):
                i_micro += 1
                distributed.begin_micro_batch(self, last=i_micro == n_micro)  # DeepSpeed bookkeeping, else no-op
                logp = policy.completion_logprobs(self.policy, inputs, ro["completion_ids"][rows], ro["mask"][rows],
                                                  h.G, h.temperature, h.share_prompt)
                old = ro["old_logp"][rows] if ro["old_logp"] is not None else logp.detach()
                ref = ro["ref_logp"][rows] if ro["ref_logp"] is not None else None
                loss, st = grpo.grpo_loss(logp, old, ref, ro["advantages"][rows], ro["mask"][rows], beta=h.beta,
                                          epsilon_low=h.epsilon_low, epsilon_high=h.epsilon_high,
                                          loss_type=h.loss_type, **totals)
                self.manual_backward(loss)
                loss_sum += loss.detach()
                for k, v in st.items():
                    stats[k].append(v)
        grad_norm, finite = self.clip_and_check()
        if distributed.all_ranks(self, finite and bool(torch.isfinite(loss_sum))):
            opt.step()
            if distributed.is_deepspeed(self):  # clipped inside the engine; its norm is the pre-clip one
                grad_norm = distributed.engine_grad_norm(self).to(self.device)
            sched.step()
            self.bad_steps = 0
        else:
            self.bad_steps += 1
            self.skipped_steps += 1
            if self.bad_steps >= h.max_bad_steps:
                raise RuntimeError(f"{self.bad_steps} optimizer steps in a row had a non-finite loss or gradient "
                                   f"(loss {loss_sum.item()}, grad norm {grad_norm.item()}); stopping before a "
                                   "broken checkpoint is written. Lower lr, check dtype, inspect the data.")
        opt.zero_grad(set_to_none=True)
        log = {f"train/{k}": torch.stack(v).mean() for k, v in stats.items()}
        log.update({"train/loss": loss_sum, "train/grad_norm": grad_norm.float(),
                    "train/lr": torch.tensor(sched.get_last_lr()[0]),
                    "train/skipped_steps": torch.tensor(float(self.skipped_steps)),
                    "step": torch.tensor(float(self.global_step))})  # the loggers' x: optimizer steps
        self.log_dict(log, prog_bar=False)

    def log_rollouts(self, rollouts: list[dict]) -> None:
        """Rewards (total, per function, per domain), their spread, and completion lengths."""
        G = self.hparams.G
        r = torch.cat([ro["rewards"] for ro in rollouts])
        lengths = torch.cat([ro["mask"].sum(1) for ro in rollouts]).float()
        groups = r.view(-1, G)
        log = {
            "train/reward": r.mean(),
            "train/reward_std": groups.std(1).mean() if G > 1 else torch.zeros(()),
            "train/zero_std_groups": (groups.max(1).values == groups.min(1).values).float().mean(),
            "train/completion_length": lengths.mean(),
        }
        for name in self.reward_weights:
            log[f"train/rewards/{name}"] = torch.cat([ro["per_fn"][name] for ro in rollouts]).mean()
        if self.hparams.think:  # words inside <think> and inside <answer>, separately
            texts = [t for ro in rollouts for t in ro["texts"]]
            for part in ("think", "answer"):
                log[f"train/{part}_length"] = torch.tensor([float(len(_tagged(t, part).split())) for t in texts]).mean()
        domains = [q.domain for ro in rollouts for q in ro["questions"] for _ in range(G)]
        for d in sorted(set(domains)):
            log[f"train/reward/{d}"] = r[torch.tensor([x == d for x in domains])].mean()
        self.log_dict({k: v.float() for k, v in log.items()}, prog_bar=False)
        self.log("reward", log["train/reward"].float(), prog_bar=True, logger=False)


def _tagged(text: str, tag: str) -> str:
    """The text inside the first ``<tag>…</tag>`` ('' if absent)."""
    m = re.search(rf"<{tag}>(.*?)</{tag}>", text, re.DOTALL)
    return m.group(1) if m else ""


class SFTModule(PolicyModule):
    """Supervised baseline: cross-entropy on the target answer only (the prompt is masked out)."""

    def __init__(self, model_name_or_path: str, target: str = "<answer>{answer}</answer>", **policy_kwargs):
        super().__init__(model_name_or_path, **policy_kwargs)
        self.save_hyperparameters()

    def targets(self, questions: list[Question]) -> tuple[Tensor, Tensor]:
        """Target ids (right-padded, each ending in EOS) and their mask."""
        tok = self.processor.tokenizer
        texts = [self.hparams.target.format(answer=q.answer, choices=q.choices) for q in questions]
        ids = [tok(t, add_special_tokens=False).input_ids + [self.eos_ids[0]] for t in texts]
        T = max(map(len, ids))
        pad = tok.pad_token_id
        out = torch.tensor([x + [pad] * (T - len(x)) for x in ids], device=self.device)
        mask = torch.tensor([[1] * len(x) + [0] * (T - len(x)) for x in ids], device=self.device)
        return out, mask

    def sft_loss(self, batch) -> Tensor:
        inputs = self.encode(batch["questions"], batch["audio"])
        target_ids, mask = self.targets(batch["questions"])
        logp = policy.completion_logprobs(self.policy, inputs, target_ids, mask, G=1)
        return -(logp * mask).sum() / mask.sum()

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """``max_grad_norm`` unless the trainer sets ``gradient_clip_val``; DeepSpeed clips via its config."""
        if distributed.is_deepspeed(self):
            return
        self.clip_gradients(optimizer, gradient_clip_val or self.hparams.max_grad_norm, gradient_clip_algorithm or "norm")

    def training_step(self, batch, batch_idx):
        loss = self.sft_loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        self.log("step", float(self.global_step + 1))  # the loggers' x: the optimizer step this batch ends
        return loss
