"""GRPO (the paper) with manual optimization.

Per optimizer step: roll out G completions per prompt (the rollout engine), score them (rewards),
normalise rewards within each group (advantages), then update with the clipped surrogate and a k3 KL
penalty to the frozen initial policy. The mathematics lives in :mod:`r1aqa_pl.grpo`; this file
orchestrates.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from contextlib import nullcontext

import torch
from torch import Tensor

from r1aqa_pl import answer_format, grpo, rewards
from r1aqa_pl.logprobs import completion_logprobs, completion_mask
from r1aqa_pl.rollout import Rollout, make_engine
from r1aqa_pl.rollout.base import Group
from r1aqa_pl.training import resume, strategy
from r1aqa_pl.training.dynamic_sampling import GroupPool
from r1aqa_pl.training.policy_module import PolicyModule


class GRPOModule(PolicyModule):
    """Group Relative Policy Optimization with manual optimization.

    ``gradient_accumulation_steps`` rollouts (batches) make one optimizer step; with
    ``num_iterations`` μ > 1 those rollouts are reused for μ optimizer steps against log-probs
    taken once before the first update (so the clipping can bite).

    ``dynamic_sampling`` (DAPO): groups whose G rewards (``dynamic_sampling_metric``: the total or one
    reward function's, e.g. accuracy) are all equal are dropped and up to
    ``max_extra_draws`` more batches are drawn per optimizer step until it has its
    ``batch_size × gradient_accumulation_steps`` prompts (see :mod:`r1aqa_pl.training.dynamic_sampling`).
    An optimizer step then spans a varying number of batches (``trainer.max_steps`` counts steps).
    """

    def __init__(
        self,
        model_name_or_path: str,
        G: int = 8,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int | None = None,  # None: the checkpoint's generation config (transformers' 50 where it sets none)
        max_new_tokens: int = 256,
        reward_weights: dict[str, float] | None = None,
        scale_rewards: str = "group",
        beta: float = 0.04,
        epsilon_low: float = 0.2,
        epsilon_high: float | None = None,
        loss_type: str = "grpo",
        importance_sampling_level: str = "token",
        num_iterations: int = 1,
        gradient_accumulation_steps: int = 1,
        micro_batch_prompts: int = 1,
        share_prompt: bool = True,
        max_bad_steps: int = 3,
        dynamic_sampling: bool = False,
        max_extra_draws: int = 4,
        dynamic_sampling_metric: str = "total",
        router_aux_loss_coef: float = 0.0,  # MoE families: weight of the routers' load-balancing loss (off)
        **policy_kwargs,
    ):
        super().__init__(model_name_or_path, **policy_kwargs)
        self.save_hyperparameters()
        self.reward_weights = dict(reward_weights or {"accuracy": 1.0, "format": 1.0})
        if self.hparams.think and "format" in self.reward_weights:
            self.reward_weights["think_format"] = self.reward_weights.pop("format")
        rewards.check_weights(self.reward_weights)
        grpo.aggregate(torch.zeros(1, 1), torch.ones(1, 1), loss_type)  # unknown loss_type fails at start-up
        grpo.log_importance_ratio(torch.zeros(1, 1), torch.zeros(1, 1), level=importance_sampling_level)  # likewise
        self.engine = make_engine(self.hparams.engine, share_prompt=share_prompt)
        self.automatic_optimization = False
        self.ref_policy = None
        self.buffer: list[Rollout] = []
        self.bad_steps = 0
        self.skipped_steps = 0
        if dynamic_sampling_metric != "total" and dynamic_sampling_metric not in self.reward_weights:
            raise ValueError(f"dynamic_sampling_metric {dynamic_sampling_metric!r}: neither 'total' nor one of "
                             f"reward_weights ({', '.join(self.reward_weights)})")
        self.pool = GroupPool(max_extra_draws, dynamic_sampling_metric)
        self.prompts_per_batch = 1

    def accumulation(self) -> int:
        return self.hparams.gradient_accumulation_steps

    def setup(self, stage: str) -> None:
        if stage == "fit":  # DeepSpeed: the engine clips at max_grad_norm; completions per rank and step
            dm = getattr(self.trainer, "datamodule", None)
            prompts = getattr(dm, "hparams", {}).get("batch_size", 1) if dm is not None else 1
            self.prompts_per_batch = prompts
            h = self.hparams
            strategy.configure_deepspeed(self, prompts * h.gradient_accumulation_steps * h.G)

    def configure_model(self) -> None:
        super().configure_model()
        if self.hparams.router_aux_loss_coef:  # a dense family fails here, not at the first update
            with self.family.collect_router_logits(self.policy):
                pass
        if self.hparams.beta > 0 and self.ref_policy is None and not self.hparams.lora \
                and strategy.zero_stage(self) != 3:  # ZeRO-3: loaded unsharded in on_fit_start
            # kept out of the module tree: never trained, never checkpointed
            ref = copy.deepcopy(self.policy).eval().requires_grad_(False)
            object.__setattr__(self, "ref_policy", ref)

    def on_fit_start(self) -> None:
        if self.hparams.beta > 0 and self.ref_policy is None and not self.hparams.lora:
            object.__setattr__(self, "ref_policy", strategy.reference_copy(self))
        if self.ref_policy is not None:
            self.ref_policy.to(self.device)

    # -- exact resume (Lightning restores weights, optimizer, scheduler, loops and data position) ---
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Every rank's RNG state (rollouts sample from it) and rollouts still waiting for their step."""
        checkpoint["grpo_resume"] = resume.resume_state(self, self.buffer, self.pool.state_dict())

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._resume_rng, self.buffer, pool = resume.load_resume_state(self, checkpoint.get("grpo_resume"))
        if pool:
            self.pool.load_state_dict(pool)

    def on_train_start(self) -> None:
        """Restore the RNG streams last, right before the first rollout after a resume."""
        if getattr(self, "_resume_rng", None) is not None:
            resume.set_rng_state(self._resume_rng)
            self._resume_rng = None
        self.buffer = resume.to_device(self.buffer, self.device)

    def reference(self):
        """(model, context): the frozen copy, or the LoRA policy with its adapter switched off."""
        if self.hparams.lora:
            return self.policy, self.policy.disable_adapter()
        return self.ref_policy, nullcontext()

    # -- rollout → reward → advantage ---------------------------------------------------------
    def make_rollout(self, batch) -> Rollout:
        return self.with_logprobs(self.sample(batch["questions"], batch["audio"]))

    def frozen_shared_encoder(self) -> bool:
        """The audio encoder is frozen and the reference is this policy with its adapter off (LoRA): its output for
        a clip is the same in the rollout, reference and policy passes, so a rollout computes it once."""
        h = self.hparams
        if not (h.lora and h.share_prompt and h.with_audio):
            return False
        core, _ = self.family.backbone(self.policy)
        return not any(p.requires_grad for p in self.family.audio_encoder(core).parameters())

    def encode_rollout(self, questions, audio) -> dict[str, Tensor]:
        """The prompts' tensors, with the audio encoder's output when :meth:`frozen_shared_encoder`."""
        inputs = self.encode(questions, audio)
        if self.frozen_shared_encoder():
            with torch.no_grad():
                inputs = self.family.with_audio_embeds(self.family.backbone(self.policy)[0], inputs)
        return inputs

    def sample(self, questions, audio) -> Rollout:
        """G scored completions per prompt, with their advantages (no log-probs yet)."""
        h = self.hparams
        inputs = self.encode_rollout(questions, audio)
        with strategy.generation_context(self) as sync:  # ZeRO-3: gathered weights
            completion_ids = self.engine.sample(
                self.family, self.policy, inputs, h.G, do_sample=True, temperature=h.temperature, top_p=h.top_p,
                max_new_tokens=h.max_new_tokens, suppress_tokens=self.suppress_ids, **sync,
                **({} if h.top_k is None else {"top_k": h.top_k}),
            )
        mask = completion_mask(completion_ids, self.eos_ids)
        texts = self.decode(completion_ids)
        group_questions = [q for q in questions for _ in range(h.G)]  # aligned with the rows
        total, per_fn = rewards.score_completions(texts, group_questions, self.reward_weights)
        A = grpo.group_advantages(total, h.G, h.scale_rewards)
        return Rollout(questions, inputs, completion_ids, mask, texts, total, per_fn, A.to(self.device))

    def with_logprobs(self, ro: Rollout) -> Rollout:
        """The log-probs the update needs: the sampling policy's (μ > 1) and the reference's (beta > 0)."""
        h = self.hparams
        ro.old_logp = self.logprobs(self.policy, ro, grad=False) if h.num_iterations > 1 else None
        ro.ref_logp = self.ref_logprobs(ro) if h.beta > 0 else None
        return ro

    def assemble(self, groups: list[Group]) -> Rollout:
        """One rollout from pooled groups of several draws: their prompts encoded together, completions
        padded to the longest (mask 0), advantages within each group as in :meth:`sample`."""
        h = self.hparams
        questions = [g.question for g in groups]
        audio = [None if g.audio is None else g.audio.numpy() for g in groups]
        inputs = self.encode_rollout(questions, audio)
        T = max(g.completion_ids.shape[1] for g in groups)
        pad = self.eos_ids[0] if self.eos_ids else 0

        def padded(x: Tensor, value: int) -> Tensor:
            return torch.nn.functional.pad(x, (0, T - x.shape[1]), value=value).to(self.device)

        ids = torch.cat([padded(g.completion_ids, pad) for g in groups])
        mask = torch.cat([padded(g.mask, 0) for g in groups])
        total = torch.cat([g.rewards.cpu() for g in groups])
        per_fn = {k: torch.cat([g.per_fn[k].cpu() for g in groups]) for k in groups[0].per_fn}
        A = grpo.group_advantages(total, h.G, h.scale_rewards)
        texts = [t for g in groups for t in g.texts]
        return Rollout(questions, inputs, ids, mask, texts, total, per_fn, A.to(self.device))

    def dynamic_step(self, batch) -> list[Rollout] | None:
        """Draw a batch into the pool; the step's rollout once every rank's pool is full (or draws run out)."""
        h = self.hparams
        target, base = self.prompts_per_batch * h.gradient_accumulation_steps, h.gradient_accumulation_steps
        self.pool.add(self.sample(batch["questions"], batch["audio"]).groups(h.G, batch["audio"]), target)
        # collective under DDP: every rank learns whether all are full, so all step together
        if not strategy.all_ranks(self, self.pool.full(target)) and not self.pool.out_of_draws(base):
            return None
        groups, stats = self.pool.take(target, base)
        self.log_dict({f"train/dynamic/{k}": torch.tensor(v) for k, v in stats.items()}, prog_bar=False)
        return [self.with_logprobs(self.assemble(groups))] if groups else None

    def micro_batches(self, ro: Rollout):
        """Slices of whole groups (``micro_batch_prompts`` prompts × G completions)."""
        return ro.micro_batches(self.hparams.G, self.hparams.micro_batch_prompts)

    def micro_logprobs(self, model, inputs: dict[str, Tensor], ro: Rollout, rows: slice) -> Tensor:
        h = self.hparams
        return completion_logprobs(self.family, model, inputs, ro.completion_ids[rows], ro.mask[rows], h.G,
                                   h.temperature, h.share_prompt)

    def logprobs(self, model, ro: Rollout, grad: bool) -> Tensor:
        """Completion log-probs of a whole rollout, micro-batch by micro-batch (no graph kept)."""
        with torch.set_grad_enabled(grad):
            return torch.cat([self.micro_logprobs(model, inputs, ro, rows).detach()
                              for inputs, rows in self.micro_batches(ro)])

    def ref_logprobs(self, ro: Rollout) -> Tensor:
        model, ctx = self.reference()
        with ctx:
            return self.logprobs(model, ro, grad=False)

    # -- update -----------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        self.policy.train()
        if self.hparams.dynamic_sampling:
            rollouts = self.dynamic_step(batch)
            if rollouts is None:
                return
        else:
            self.buffer.append(self.make_rollout(batch))
            if len(self.buffer) < self.hparams.gradient_accumulation_steps:
                return
            rollouts, self.buffer = self.buffer, []
        for _ in range(self.hparams.num_iterations):
            self.update(rollouts)
        self.log_rollouts(rollouts)

    def update(self, rollouts: list[Rollout]) -> None:
        """One optimizer step over the buffered rollouts, gradients accumulated per micro-batch."""
        h = self.hparams
        opt, sched = self.optimizers(), self.lr_schedulers()
        totals = {
            "num_completions": sum(ro.mask.shape[0] for ro in rollouts),
            "num_tokens": int(sum(ro.mask.sum() for ro in rollouts)),
            "max_completion_length": h.max_new_tokens,
        }
        stats, loss_sum = defaultdict(list), torch.zeros((), device=self.device)
        n_micro, i_micro = sum(1 for ro in rollouts for _ in self.micro_batches(ro)), 0
        for ro in rollouts:
            for inputs, rows in self.micro_batches(ro):
                i_micro += 1
                strategy.begin_micro_batch(self, last=i_micro == n_micro)  # DeepSpeed bookkeeping, else no-op
                aux = self.family.collect_router_logits(self.policy) if h.router_aux_loss_coef else nullcontext()
                with aux as routed:
                    logp = self.micro_logprobs(self.policy, inputs, ro, rows)
                old = ro.old_logp[rows] if ro.old_logp is not None else logp.detach()
                ref = ro.ref_logp[rows] if ro.ref_logp is not None else None
                loss, st = grpo.grpo_loss(logp, old, ref, ro.advantages[rows], ro.mask[rows], beta=h.beta,
                                          epsilon_low=h.epsilon_low, epsilon_high=h.epsilon_high,
                                          loss_type=h.loss_type,
                                          importance_sampling_level=h.importance_sampling_level, **totals)
                if routed is not None:  # MoE: the routers' load-balancing loss, averaged over the micro-batches
                    aux_loss = self.family.router_aux_loss(self.policy, routed)
                    loss = loss + h.router_aux_loss_coef * aux_loss / n_micro
                    st["router_aux_loss"] = aux_loss.detach()
                self.manual_backward(loss)
                loss_sum += loss.detach()
                for k, v in st.items():
                    stats[k].append(v)
        grad_norm, finite = self.clip_and_check()
        if strategy.all_ranks(self, finite and bool(torch.isfinite(loss_sum))):
            opt.step()
            if strategy.is_deepspeed(self):  # clipped inside the engine; its norm is the pre-clip one
                grad_norm = strategy.engine_grad_norm(self).to(self.device)
            sched.step()
            self.engine.after_step(self.policy)
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

    def log_rollouts(self, rollouts: list[Rollout]) -> None:
        """Rewards (total, per function, per domain), their spread, and completion lengths."""
        G = self.hparams.G
        r = torch.cat([ro.rewards for ro in rollouts])
        lengths = torch.cat([ro.mask.sum(1) for ro in rollouts]).float()
        groups = r.view(-1, G)
        log = {
            "train/reward": r.mean(),
            "train/reward_std": groups.std(1).mean() if G > 1 else torch.zeros(()),
            "train/zero_std_groups": (groups.max(1).values == groups.min(1).values).float().mean(),
            "train/completion_length": lengths.mean(),
        }
        for name in self.reward_weights:
            log[f"train/rewards/{name}"] = torch.cat([ro.per_fn[name] for ro in rollouts]).mean()
        if self.hparams.think:  # words inside <think> and inside <answer>, separately
            texts = [t for ro in rollouts for t in ro.texts]
            for part in ("think", "answer"):
                words = [float(len((answer_format.tagged(t, part) or "").split())) for t in texts]
                log[f"train/{part}_length"] = torch.tensor(words).mean()
        domains = [q.domain for ro in rollouts for q in ro.questions for _ in range(G)]
        for d in sorted(set(domains)):
            log[f"train/reward/{d}"] = r[torch.tensor([x == d for x in domains])].mean()
        self.log_dict({k: v.float() for k, v in log.items()}, prog_bar=False)
        self.log("reward", log["train/reward"].float(), prog_bar=True, logger=False)
