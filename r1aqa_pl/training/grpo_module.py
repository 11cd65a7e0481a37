"""GRPO (the paper) with manual optimization.

Per optimizer step: roll out G completions per prompt (the rollout engine), score them (rewards),
normalise rewards within each group (advantages), then update with the clipped surrogate and a k3 KL
penalty to the frozen initial policy. The mathematics lives in :mod:`r1aqa_pl.algo` (rewards, advantages,
losses, log-probs), each a seam chosen in the config; this file orchestrates.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict

import torch
from torch import Tensor

from r1aqa_pl.algo.advantages import ADVANTAGES, AdvantageEstimator, AdvantageName
from r1aqa_pl.algo.logprobs import completion_logprobs, completion_mask
from r1aqa_pl.algo.losses import LOSSES, LossName, PolicyLoss
from r1aqa_pl.algo.rewards import Reward, RewardName, build_rewards, score_completions
from r1aqa_pl.registry import spec
from r1aqa_pl.rollout import EngineName, Rollout, RolloutEngine
from r1aqa_pl.rollout.base import ScoredGroup
from r1aqa_pl.task import answer_format
from r1aqa_pl.training import resume, strategy
from r1aqa_pl.training.config import Evaluation, Optimization, Policy, Sampling, Selection, group
from r1aqa_pl.training.dynamic_sampling import GroupPool
from r1aqa_pl.training.policy_module import PolicyModule


class GRPOModule(PolicyModule):
    """Group Relative Policy Optimization with manual optimization.

    ``optimization.gradient_accumulation_steps`` rollouts (batches) make one optimizer step; with
    ``optimization.num_iterations`` μ > 1 those rollouts are reused for μ optimizer steps against log-probs
    taken once before the first update (so the clipping can bite).

    ``selection.dynamic_sampling`` (DAPO): groups whose G rewards (``selection.metric``: the total or one
    reward's, e.g. accuracy) are all equal are dropped and up to ``selection.max_extra_draws`` more batches
    are drawn per optimizer step until it has its ``batch_size × gradient_accumulation_steps`` prompts (see
    :mod:`r1aqa_pl.training.dynamic_sampling`). An optimizer step then spans a varying number of batches
    (``trainer.max_steps`` counts steps).
    """

    def __init__(
        self,
        policy: Policy,
        sampling: Sampling = Sampling(),
        optimization: Optimization = Optimization(),
        selection: Selection = Selection(),
        evaluation: Evaluation = Evaluation(),
        rewards: Sequence[RewardName | Reward] = ("accuracy", "format"),
        advantage: AdvantageName | AdvantageEstimator = "group",
        loss: LossName | PolicyLoss = "grpo",
        engine: EngineName | RolloutEngine = "hf",
    ):
        """
        Args:
            policy: the checkpoint and how its forward passes run (a model path alone is accepted).
            sampling: the rollout: G completions per prompt and how they are sampled.
            optimization: the optimizer step.
            selection: which sampled groups train (dynamic sampling).
            evaluation: greedy answers for validation and ``r1aqa eval``.
            rewards: summed, each times its weight: registered names (accuracy, format, think_format,
                mmau_accuracy, majority_vote) or ``{class_path, init_args: {weight, ...}}`` of ``Reward`` subclasses.
            advantage: rewards -> advantages: group | batch | none (the std that scales them), or a class path.
            loss: grpo | bnpo | dapo | dr_grpo | gspo, or ``{class_path, init_args}`` (e.g. ClippedSurrogateLoss
                with beta, epsilon_low, epsilon_high).
            engine: the rollout engine: a registered name (hf) or the class path of a ``RolloutEngine`` subclass.
        """
        self.sampling = group(Sampling, sampling)
        self.selection = group(Selection, selection)
        self.rewards = build_rewards(rewards, think=group(Policy, policy).think)
        self.advantage = ADVANTAGES.build(advantage)
        self.loss = LOSSES.build(loss)
        super().__init__(policy, optimization, evaluation, engine)
        self.automatic_optimization = False
        self.ref_policy = None
        self.buffer: list[Rollout] = []
        self.bad_steps = 0
        self.skipped_steps = 0
        metric = self.selection.metric
        if metric != "total" and metric not in [r.label for r in self.rewards]:
            raise ValueError(f"selection.metric {metric!r}: neither 'total' nor one of the rewards "
                             f"({', '.join(r.label for r in self.rewards)})")
        self.pool = GroupPool(self.selection.max_extra_draws, metric)
        self.prompts_per_batch = 1

    def hyperparameters(self) -> dict:
        return {**super().hyperparameters(), "sampling": asdict(self.sampling), "selection": asdict(self.selection),
                "rewards": [spec(r) for r in self.rewards], "advantage": spec(self.advantage), "loss": spec(self.loss)}

    @property
    def beta(self) -> float:
        """The KL weight: > 0 means a reference policy and its log-probs."""
        return float(getattr(self.loss, "beta", 0.0) or 0.0)

    def accumulation(self) -> int:
        return self.optimization.gradient_accumulation_steps

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit":  # DeepSpeed: the engine clips at max_grad_norm; completions per rank and step
            dm = getattr(self.trainer, "datamodule", None)
            prompts = getattr(dm, "hparams", {}).get("batch_size", 1) if dm is not None else 1
            self.prompts_per_batch = prompts
            strategy.configure_deepspeed(
                self, prompts * self.optimization.gradient_accumulation_steps * self.sampling.G
            )

    def configure_model(self) -> None:
        super().configure_model()
        if self.optimization.router_aux_loss_coef:  # a dense family fails here, not at the first update
            with self.family.collect_router_logits(self.policy):
                pass
        if (
            self.beta > 0 and self.ref_policy is None and not self.policy_config.lora and strategy.zero_stage(self) != 3
        ):  # ZeRO-3: loaded unsharded in on_fit_start
            # kept out of the module tree: never trained, never checkpointed
            ref = copy.deepcopy(self.policy).eval().requires_grad_(False)
            object.__setattr__(self, "ref_policy", ref)

    def on_fit_start(self) -> None:
        if self.beta > 0 and self.ref_policy is None and not self.policy_config.lora:
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
        if self.policy_config.lora:
            return self.policy, self.policy.disable_adapter()
        return self.ref_policy, nullcontext()

    # -- rollout → reward → advantage ---------------------------------------------------------
    def make_rollout(self, batch) -> Rollout:
        return self.with_logprobs(self.sample(batch["questions"], batch["audio"]))

    def frozen_shared_encoder(self) -> bool:
        """The audio encoder is frozen and the reference is this policy with its adapter off (LoRA): its output for
        a clip is the same in the rollout, reference and policy passes, so a rollout computes it once."""
        p = self.policy_config
        if not (p.lora and p.share_prompt and p.with_audio):
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
        s = self.sampling
        inputs = self.encode_rollout(questions, audio)
        with strategy.generation_context(self) as sync:  # ZeRO-3: gathered weights
            completion_ids = self.engine.sample(
                self.family,
                self.policy,
                inputs,
                s.G,
                share_prompt=self.policy_config.share_prompt,
                do_sample=True,
                temperature=s.temperature,
                top_p=s.top_p,
                max_new_tokens=s.max_new_tokens,
                suppress_tokens=self.suppress_ids,
                **sync,
                **({} if s.top_k is None else {"top_k": s.top_k}),
            )
        mask = completion_mask(completion_ids, self.eos_ids)
        texts = self.decode(completion_ids)
        group_questions = [q for q in questions for _ in range(s.G)]  # aligned with the rows
        total, per_fn = score_completions(texts, group_questions, self.rewards)
        A = self.advantage(total, s.G)
        return Rollout(questions, inputs, completion_ids, mask, texts, total, per_fn, A.to(self.device))

    def with_logprobs(self, ro: Rollout) -> Rollout:
        """The log-probs the update needs: the sampling policy's (μ > 1) and the reference's (beta > 0)."""
        ro.old_logp = self.logprobs(self.policy, ro, grad=False) if self.optimization.num_iterations > 1 else None
        ro.ref_logp = self.ref_logprobs(ro) if self.beta > 0 else None
        return ro

    def assemble(self, groups: list[ScoredGroup]) -> Rollout:
        """One rollout from pooled groups of several draws: their prompts encoded together, completions
        padded to the longest (mask 0), advantages within each group as in :meth:`sample`."""
        questions = [g.question for g in groups]
        audio = [None if g.audio is None else [c.numpy() for c in g.audio] if isinstance(g.audio, list)
                 else g.audio.numpy() for g in groups]
        inputs = self.encode_rollout(questions, audio)
        T = max(g.completion_ids.shape[1] for g in groups)
        pad = self.eos_ids[0] if self.eos_ids else 0

        def padded(x: Tensor, value: int) -> Tensor:
            return torch.nn.functional.pad(x, (0, T - x.shape[1]), value=value).to(self.device)

        ids = torch.cat([padded(g.completion_ids, pad) for g in groups])
        mask = torch.cat([padded(g.mask, 0) for g in groups])
        total = torch.cat([g.rewards.cpu() for g in groups])
        per_fn = {k: torch.cat([g.per_fn[k].cpu() for g in groups]) for k in groups[0].per_fn}
        A = self.advantage(total, self.sampling.G)
        texts = [t for g in groups for t in g.texts]
        return Rollout(questions, inputs, ids, mask, texts, total, per_fn, A.to(self.device))

    def dynamic_step(self, batch) -> list[Rollout] | None:
        """Draw a batch into the pool; the step's rollout once every rank's pool is full (or draws run out)."""
        base = self.optimization.gradient_accumulation_steps
        target = self.prompts_per_batch * base
        self.pool.add(self.sample(batch["questions"], batch["audio"]).groups(self.sampling.G, batch["audio"]), target)
        # collective under DDP: every rank learns whether all are full, so all step together
        if not strategy.all_ranks(self, self.pool.full(target)) and not self.pool.out_of_draws(base):
            return None
        groups, stats = self.pool.take(target, base)
        self.log_dict({f"train/dynamic/{k}": torch.tensor(v) for k, v in stats.items()}, prog_bar=False)
        return [self.with_logprobs(self.assemble(groups))] if groups else None

    def micro_batches(self, ro: Rollout):
        """Slices of whole groups (``micro_batch_prompts`` prompts × G completions)."""
        return ro.micro_batches(self.sampling.G, self.optimization.micro_batch_prompts)

    def micro_logprobs(self, model, inputs: dict[str, Tensor], ro: Rollout, rows: slice) -> Tensor:
        return completion_logprobs(
            self.family,
            model,
            inputs,
            ro.completion_ids[rows],
            ro.mask[rows],
            self.sampling.G,
            self.sampling.temperature,
            self.policy_config.share_prompt,
        )

    def logprobs(self, model, ro: Rollout, grad: bool) -> Tensor:
        """Completion log-probs of a whole rollout, micro-batch by micro-batch (no graph kept)."""
        with torch.set_grad_enabled(grad):
            return torch.cat(
                [self.micro_logprobs(model, inputs, ro, rows).detach() for inputs, rows in self.micro_batches(ro)]
            )

    def ref_logprobs(self, ro: Rollout) -> Tensor:
        model, ctx = self.reference()
        with ctx:
            return self.logprobs(model, ro, grad=False)

    # -- update -----------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        self.policy.train()
        if self.selection.dynamic_sampling:
            rollouts = self.dynamic_step(batch)
            if rollouts is None:
                return
        else:
            self.buffer.append(self.make_rollout(batch))
            if len(self.buffer) < self.optimization.gradient_accumulation_steps:
                return
            rollouts, self.buffer = self.buffer, []
        for _ in range(self.optimization.num_iterations):
            self.update(rollouts)
        self.log_rollouts(rollouts)

    def update(self, rollouts: list[Rollout]) -> None:
        """One optimizer step over the buffered rollouts, gradients accumulated per micro-batch."""
        o = self.optimization
        opt, sched = self.optimizers(), self.lr_schedulers()
        n_micro, i_micro = sum(1 for ro in rollouts for _ in self.micro_batches(ro)), 0
        totals = {
            "num_completions": sum(ro.mask.shape[0] for ro in rollouts),
            "num_tokens": int(sum(ro.mask.sum() for ro in rollouts)),
            "max_completion_length": self.sampling.max_new_tokens,
            "num_micro_batches": n_micro,
        }
        stats, loss_sum = defaultdict(list), torch.zeros((), device=self.device)
        for ro in rollouts:
            for inputs, rows in self.micro_batches(ro):
                i_micro += 1
                strategy.begin_micro_batch(self, last=i_micro == n_micro)  # DeepSpeed bookkeeping, else no-op
                aux = self.family.collect_router_logits(self.policy) if o.router_aux_loss_coef else nullcontext()
                with aux as routed:
                    logp = self.micro_logprobs(self.policy, inputs, ro, rows)
                old = ro.old_logp[rows] if ro.old_logp is not None else logp.detach()
                ref = ro.ref_logp[rows] if ro.ref_logp is not None else None
                loss, st = self.loss(logp, old, ref, ro.advantages[rows], ro.mask[rows], **totals)
                if routed is not None:  # MoE: the routers' load-balancing loss, averaged over the micro-batches
                    aux_loss = self.family.router_aux_loss(self.policy, routed)
                    loss = loss + o.router_aux_loss_coef * aux_loss / n_micro
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
            if self.bad_steps >= o.max_bad_steps:
                raise RuntimeError(
                    f"{self.bad_steps} optimizer steps in a row had a non-finite loss or gradient "
                    f"(loss {loss_sum.item()}, grad norm {grad_norm.item()}); stopping before a "
                    "broken checkpoint is written. Lower lr, check dtype, inspect the data."
                )
        opt.zero_grad(set_to_none=True)
        log = {f"train/{k}": torch.stack(v).mean() for k, v in stats.items()}
        log.update(
            {
                "train/loss": loss_sum,
                "train/grad_norm": grad_norm.float(),
                "train/lr": torch.tensor(sched.get_last_lr()[0]),
                "train/skipped_steps": torch.tensor(float(self.skipped_steps)),
                "step": torch.tensor(float(self.global_step)),
            }
        )  # the loggers' x: optimizer steps
        self.log_dict(log, prog_bar=False)

    def log_rollouts(self, rollouts: list[Rollout]) -> None:
        """Rewards (total, per function, per domain), their spread, and completion lengths."""
        G = self.sampling.G
        r = torch.cat([ro.rewards for ro in rollouts])
        lengths = torch.cat([ro.mask.sum(1) for ro in rollouts]).float()
        groups = r.view(-1, G)
        log = {
            "train/reward": r.mean(),
            "train/reward_std": groups.std(1).mean() if G > 1 else torch.zeros(()),
            "train/zero_std_groups": (groups.max(1).values == groups.min(1).values).float().mean(),
            "train/completion_length": lengths.mean(),
        }
        for name in (r.label for r in self.rewards):
            log[f"train/rewards/{name}"] = torch.cat([ro.per_fn[name] for ro in rollouts]).mean()
        if self.policy_config.think:  # words inside <think> and inside <answer>, separately
            texts = [t for ro in rollouts for t in ro.texts]
            for part in ("think", "answer"):
                words = [float(len((answer_format.tagged(t, part) or "").split())) for t in texts]
                log[f"train/{part}_length"] = torch.tensor(words).mean()
        domains = [q.domain for ro in rollouts for q in ro.questions for _ in range(G)]
        for d in sorted(set(domains)):
            log[f"train/reward/{d}"] = r[torch.tensor([x == d for x in domains])].mean()
        self.log_dict({k: v.float() for k, v in log.items()}, prog_bar=False)
        self.log("reward", log["train/reward"].float(), prog_bar=True, logger=False)
