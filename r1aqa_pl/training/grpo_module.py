"""GRPO (the paper) with manual optimization.

Per optimizer step: roll out G completions per prompt (the rollout engine), score them (rewards),
normalise rewards within each group (advantages), then update with the clipped surrogate and a k3 KL
penalty to the frozen initial policy. The mathematics lives in :mod:`r1aqa_pl.algo` (rewards, advantages,
losses, log-probs), each a seam chosen in the config; this file orchestrates.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict

import torch
from torch import Tensor

from r1aqa_pl.algo.advantages import ADVANTAGES, AdvantageEstimator, AdvantageName
from r1aqa_pl.algo.grounding import LABELS, audio_relevance, contribution_weights, pass_rates, relevance_weights
from r1aqa_pl.algo.logprobs import completion_logprobs, completion_mask
from r1aqa_pl.algo.losses import LOSSES, LossName, PolicyLoss, takes_pg_weight, truncated_importance_weights
from r1aqa_pl.algo.rewards import Reward, RewardName, ThinkLength, accuracy, build_rewards, score_completions
from r1aqa_pl.registry import spec
from r1aqa_pl.rollout import EngineName, Rollout, RolloutEngine
from r1aqa_pl.rollout.base import ScoredGroup
from r1aqa_pl.task import answer_format
from r1aqa_pl.training import resume, strategy
from r1aqa_pl.training.config import Evaluation, Grounding, Optimization, Policy, Sampling, Selection, group
from r1aqa_pl.training.dynamic_sampling import GroupPool
from r1aqa_pl.training.policy_module import PolicyModule
from r1aqa_pl.training.signals import StepSignals


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

    Off by default, each a knob (see :mod:`r1aqa_pl.training.config`): ``grounding.relevance`` weighs the policy
    gradient per token by how much the audio decides it, ``grounding.contribution`` weighs (or drops) the groups
    the policy answers as well without the audio, ``sampling.keep_logprobs`` logs the rollout engine's agreement
    with the update and ``optimization.behaviour_correction: tis`` corrects for it.
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
        grounding: Grounding = Grounding(),
    ):
        """
        Args:
            policy: the checkpoint and how its forward passes run (a model path alone is accepted).
            sampling: the rollout: G completions per prompt and how they are sampled.
            optimization: the optimizer step.
            selection: which sampled groups train (dynamic sampling).
            evaluation: greedy answers for validation and ``r1aqa eval``.
            rewards: summed, each times its weight: registered names (accuracy, format, think_format,
                mmau_accuracy, majority_vote, think_length) or ``{class_path, init_args: {weight, ...}}`` of ``Reward``
                subclasses.
            advantage: rewards -> advantages: group | batch | none (the std that scales them), or a class path.
            loss: grpo | bnpo | dapo | dr_grpo | gspo, or ``{class_path, init_args}`` (e.g. ClippedSurrogateLoss
                with beta, epsilon_low, epsilon_high).
            engine: the rollout engine: a registered name (hf) or the class path of a ``RolloutEngine`` subclass.
            grounding: audio-grounded signals: token relevance and online audio contribution (both off).
        """
        self.sampling = group(Sampling, sampling)
        self.selection = group(Selection, selection)
        self.grounding = group(Grounding, grounding)
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
        self.pool = GroupPool(self.selection.max_extra_draws, metric, grounded=self.grounding.contribution)
        self.prompts_per_batch = 1
        g, o = self.grounding, self.optimization
        if (g.relevance or g.contribution) and not self.policy_config.with_audio:
            raise ValueError("grounding.relevance / grounding.contribution compare the policy with and without the "
                             "audio: they need policy.with_audio true")
        if (g.relevance or o.behaviour_correction) and not takes_pg_weight(self.loss):
            raise ValueError(f"grounding.relevance / optimization.behaviour_correction weigh the policy-gradient term "
                             f"per token: the loss {type(self.loss).__name__} takes no pg_weight (see PolicyLoss)")

    def hyperparameters(self) -> dict:
        return {**super().hyperparameters(), "sampling": asdict(self.sampling), "selection": asdict(self.selection),
                "grounding": asdict(self.grounding), "rewards": [spec(r) for r in self.rewards],
                "advantage": spec(self.advantage), "loss": spec(self.loss)}

    @property
    def keeps_logprobs(self) -> bool:
        """The rollout keeps the engine's log-probs: asked for, or needed by the behaviour correction."""
        return self.sampling.keep_logprobs or self.optimization.behaviour_correction is not None

    @property
    def keeps_routes(self) -> bool:
        """A mixture of experts that keeps the engine's log-probs keeps its routers' choices too (the routing check)."""
        return self.keeps_logprobs and bool(self.family.routers(self.policy))

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
        super().on_fit_start()
        if self.beta > 0 and self.ref_policy is None and not self.policy_config.lora:
            object.__setattr__(self, "ref_policy", strategy.reference_copy(self))
        if self.ref_policy is not None:
            self.ref_policy.to(self.device)

    # -- exact resume (Lightning restores weights, optimizer, scheduler, loops and data position) ---
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Every rank's RNG state (rollouts sample from it) and rollouts still waiting for their step."""
        checkpoint["grpo_resume"] = resume.resume_state(self, self.buffer, self.pool.state_dict())

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # on another world size: the data position is rewritten in prompts, the pools redistributed (warned)
        self._resume_rng, self.buffer, pool = resume.load_resume_state(self, checkpoint.get("grpo_resume"), checkpoint)
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
        """G scored completions per prompt, with their advantages (no log-probs yet); with ``grounding.contribution``
        also k audio-free answers per prompt, the group's advantages weighed by its label."""
        s, g = self.sampling, self.grounding
        inputs = self.encode_rollout(questions, audio)
        no_audio = self.encode(questions, [None] * len(questions), with_audio=False) if g.contribution else None
        kw = dict(share_prompt=self.policy_config.share_prompt, do_sample=True, temperature=s.temperature,
                  top_p=s.top_p, max_new_tokens=s.max_new_tokens, suppress_tokens=self.suppress_ids,
                  **({} if s.top_k is None else {"top_k": s.top_k}))
        rollout_logp = rollout_routes = free_ids = None
        with strategy.generation_context(self) as sync:  # ZeRO-3: gathered weights (once for both samplings)
            if self.keeps_routes:
                completion_ids, rollout_logp, rollout_routes = self.engine.sample(
                    self.family, self.policy, inputs, s.G, **kw, **sync, with_logprobs=True, with_routes=True)
            elif self.keeps_logprobs:
                completion_ids, rollout_logp = self.engine.sample(self.family, self.policy, inputs, s.G, **kw, **sync,
                                                                  with_logprobs=True)
            else:
                completion_ids = self.engine.sample(self.family, self.policy, inputs, s.G, **kw, **sync)
            if no_audio is not None:
                free_ids = self.engine.sample(self.family, self.policy, no_audio, g.contribution_samples, **kw, **sync)
        mask = completion_mask(completion_ids, self.eos_ids)
        texts = self.decode(completion_ids)
        group_questions = [q for q in questions for _ in range(s.G)]  # aligned with the rows
        total, per_fn = score_completions(texts, group_questions, self.rewards)
        A = self.advantage(total, s.G)
        ro = Rollout(questions, inputs, completion_ids, mask, texts, total, per_fn, A.to(self.device),
                     rollout_logp=rollout_logp, rollout_routes=rollout_routes)
        if free_ids is not None:
            k = g.contribution_samples
            ro.pass_with = pass_rates(accuracy(texts, group_questions), s.G)
            ro.pass_without = pass_rates(accuracy(self.decode(free_ids), [q for q in questions for _ in range(k)]), k)
            _, ro.group_weight = contribution_weights(ro.pass_with, ro.pass_without, g.contribution_margin,
                                                      g.contribution_weights)
            ro.advantages = ro.advantages * ro.group_weight.to(self.device).repeat_interleave(s.G)
        return ro

    def with_logprobs(self, ro: Rollout) -> Rollout:
        """The log-probs the update needs: the sampling policy's (μ > 1), the reference's (beta > 0) and the sampling
        policy's without the audio (``grounding.relevance``)."""
        ro.old_logp = self.logprobs(self.policy, ro, grad=False) if self.optimization.num_iterations > 1 else None
        ro.ref_logp = self.ref_logprobs(ro) if self.beta > 0 else None
        ro.no_audio_logp = self.no_audio_logprobs(ro) if self.grounding.relevance else None
        return ro

    def no_audio_logprobs(self, ro: Rollout) -> Tensor:
        """The completions' log-probs under this policy with the audio left out of their prompts (one no-grad pass)."""
        inputs = self.encode(ro.questions, [None] * len(ro.questions), with_audio=False)
        return self.logprobs(self.policy, dataclasses.replace(ro, inputs=inputs), grad=False)

    def assemble(self, groups: list[ScoredGroup]) -> Rollout:
        """One rollout from pooled groups of several draws: their prompts encoded together, completions
        padded to the longest (mask 0), advantages within each group as in :meth:`sample`."""
        questions = [g.question for g in groups]
        audio = [None if g.audio is None else [c.numpy() for c in g.audio] if isinstance(g.audio, list)
                 else g.audio.numpy() for g in groups]
        inputs = self.encode_rollout(questions, audio)
        T = max(g.completion_ids.shape[1] for g in groups)
        pad = self.eos_ids[0] if self.eos_ids else 0

        def padded(x: Tensor, value: int) -> Tensor:  # [rows, T_g, ...] -> [rows, T, ...]
            return torch.nn.functional.pad(x, (0, 0) * (x.dim() - 2) + (0, T - x.shape[1]), value=value).to(self.device)

        ids = torch.cat([padded(g.completion_ids, pad) for g in groups])
        mask = torch.cat([padded(g.mask, 0) for g in groups])
        total = torch.cat([g.rewards.cpu() for g in groups])
        per_fn = {k: torch.cat([g.per_fn[k].cpu() for g in groups]) for k in groups[0].per_fn}
        A = self.advantage(total, self.sampling.G)
        texts = [t for g in groups for t in g.texts]
        ro = Rollout(questions, inputs, ids, mask, texts, total, per_fn, A.to(self.device))
        if self.keeps_logprobs:
            ro.rollout_logp = torch.cat([padded(g.rollout_logp, 0) for g in groups])
        if self.keeps_routes:  # [G, T_g, layers, k] each, -1 where padded (masked anyway)
            ro.rollout_routes = torch.cat([padded(g.rollout_routes, -1) for g in groups])
        if self.grounding.contribution:  # each group's own label weight, as :meth:`sample` gave it
            ro.pass_with = torch.tensor([g.pass_with for g in groups])
            ro.pass_without = torch.tensor([g.pass_without for g in groups])
            ro.group_weight = torch.tensor([g.weight for g in groups])
            ro.advantages = ro.advantages * ro.group_weight.to(self.device).repeat_interleave(self.sampling.G)
        return ro

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

    def micro_logprobs(self, model, inputs: dict[str, Tensor], ro: Rollout, rows: slice,
                       with_routes: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        return completion_logprobs(
            self.family,
            model,
            inputs,
            ro.completion_ids[rows],
            ro.mask[rows],
            self.sampling.G,
            self.sampling.temperature,
            self.policy_config.share_prompt,
            with_routes=with_routes,
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
        for i in range(self.optimization.num_iterations):
            self.update(rollouts, first=i == 0)
        self.log_rollouts(rollouts)

    def update(self, rollouts: list[Rollout], first: bool = True) -> None:
        """One optimizer step over the buffered rollouts, gradients accumulated per micro-batch. ``first``: the first
        update of these rollouts, whose forwards run the sampling policy's weights (the routing check is made there)."""
        o = self.optimization
        opt, sched = self.optimizers(), self.lr_schedulers()
        n_micro, i_micro = sum(1 for ro in rollouts for _ in self.micro_batches(ro)), 0
        totals = {
            "num_completions": sum(ro.mask.shape[0] for ro in rollouts),
            "num_tokens": int(sum(ro.mask.sum() for ro in rollouts)),
            "max_completion_length": self.sampling.max_new_tokens,
            "num_micro_batches": n_micro,
        }
        stats, loss_sum, signals = defaultdict(list), torch.zeros((), device=self.device), StepSignals()
        for ro in rollouts:
            for inputs, rows in self.micro_batches(ro):
                i_micro += 1
                strategy.begin_micro_batch(self, last=i_micro == n_micro)  # DeepSpeed bookkeeping, else no-op
                aux = self.family.collect_router_logits(self.policy) if o.router_aux_loss_coef else nullcontext()
                routes = first and ro.rollout_routes is not None
                with aux as routed:
                    logp = self.micro_logprobs(self.policy, inputs, ro, rows, with_routes=routes)
                if routes:  # the experts this forward chose against the rollout's, per real token and layer
                    logp, chosen = logp
                    signals.routing(ro.rollout_routes[rows], chosen, ro.mask[rows])
                loss, st = self.micro_loss(logp, ro, rows, totals, signals)
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
        log.update(signals.log())
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

    def micro_loss(self, logp: Tensor, ro: Rollout, rows: slice, totals: dict, signals: StepSignals | None = None):
        """The loss of one micro-batch (rows ``rows`` of ``ro``) from its log-probs with grad: old_logp is the sampling
        policy's (taken before the first update when μ > 1, else these log-probs detached: the same policy)."""
        old = ro.old_logp[rows] if ro.old_logp is not None else logp.detach()
        ref = ro.ref_logp[rows] if ro.ref_logp is not None else None
        weight = self.pg_weight(old, ro, rows, signals or StepSignals())
        extra = {} if weight is None else {"pg_weight": weight}
        return self.loss(logp, old, ref, ro.advantages[rows], ro.mask[rows], **totals, **extra)

    def pg_weight(self, old: Tensor, ro: Rollout, rows: slice, signals: StepSignals) -> Tensor | None:
        """The per-token weight of the policy-gradient term, None when no knob sets one: the truncated importance
        weights against the engine's log-probs (``behaviour_correction: tis``) times the audio-relevance weights
        (``grounding.relevance``). Records the rollout/trainer agreement, the weights and the relevance."""
        mask, weight, g = ro.mask[rows], None, self.grounding
        if ro.rollout_logp is not None:
            behaviour = ro.rollout_logp[rows].to(old)
            signals.agreement(old, behaviour, mask)
            if self.optimization.behaviour_correction == "tis":
                cap = self.optimization.tis_cap
                weight = truncated_importance_weights(old, behaviour, cap) * mask.to(old)
                signals.tis_weights(weight, mask, cap)
        if g.relevance:
            r = audio_relevance(old, ro.no_audio_logp[rows])
            kept = relevance_weights(r, mask, g.relevance_keep, g.relevance_threshold, g.relevance_scope,
                                     self.sampling.G, g.relevance_floor).to(old)
            domains = [q.domain for q in ro.questions for _ in range(self.sampling.G)][rows]
            signals.relevance_mask(r, kept, mask, domains)
            weight = kept if weight is None else weight * kept
        return weight

    def log_rollouts(self, rollouts: list[Rollout]) -> None:
        """Rewards (total, per function, per domain), their spread, completion lengths, the think part's length per
        domain (think mode or the think_length reward) and the audio contribution's pass rates and labels."""
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
        texts = [t for ro in rollouts for t in ro.texts]
        think = self.policy_config.think or any(isinstance(f, ThinkLength) for f in self.rewards)
        # the words the think_length reward counts: inside <think></think>, or to the end after an unclosed <think>
        think_words = torch.tensor([float(answer_format.think_words(t)) for t in texts]) if think else None
        if self.policy_config.think:  # words of thinking and inside <answer>, separately
            log["train/think_length"] = think_words.mean()
            log["train/answer_length"] = torch.tensor([float(len((answer_format.tagged(t) or "").split()))
                                                       for t in texts]).mean()
        domains = [q.domain for ro in rollouts for q in ro.questions for _ in range(G)]
        for d in sorted(set(domains)):
            rows = torch.tensor([x == d for x in domains])
            log[f"train/reward/{d}"] = r[rows].mean()
            if think_words is not None:
                log[f"train/think_length/{d}/mean"] = think_words[rows].mean()
                log[f"train/think_length/{d}/max"] = think_words[rows].max()
        if self.grounding.contribution:
            log.update(self.contribution_log(rollouts))
        self.log_dict({k: v.float() for k, v in log.items()}, prog_bar=False)
        self.log("reward", log["train/reward"].float(), prog_bar=True, logger=False)

    def contribution_log(self, rollouts: list[Rollout]) -> dict[str, Tensor]:
        """Over the step's prompts: mean pass rate with and without the audio, the fraction of each label (the rule of
        ``r1aqa audio-contribution``) and the mean weight their groups' advantages got."""
        pw = torch.cat([ro.pass_with for ro in rollouts])
        po = torch.cat([ro.pass_without for ro in rollouts])
        labels, _ = contribution_weights(pw, po, self.grounding.contribution_margin, {})
        out = {"train/contribution/pass_with": pw.mean(), "train/contribution/pass_without": po.mean(),
               "train/contribution/weight": torch.cat([ro.group_weight for ro in rollouts]).mean()}
        for lb in LABELS:
            out[f"train/contribution/{lb}"] = torch.tensor(sum(x == lb for x in labels) / len(labels))
        return out
