"""The trainers' knobs, grouped by concern; each group a typed dataclass that checks its ranges at start-up.

In a config they are sections of ``model.init_args`` (``lightning fit --print_config`` shows them so)::

    policy:       {model_name_or_path: ..., dtype: bfloat16, lora: null, think: false, ...}
    sampling:     {G: 8, temperature: 1.0, max_new_tokens: 256, ...}
    optimization: {lr: 1.0e-6, gradient_accumulation_steps: 2, ...}
    selection:    {dynamic_sampling: false, ...}
    grounding:    {relevance: null, contribution: false, ...}
    evaluation:   {max_new_tokens: 256, stop_at_answer: true}

A dict of a group's fields is accepted wherever the group is (a checkpoint's hyper-parameters store them so).
A bad value fails when the module is built -- before any weights load -- naming the knob.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from r1aqa_pl.algo.grounding import LABELS, RELEVANCE_SCOPES
from r1aqa_pl.models import DTYPES, FAMILIES, Dtype, check_local


def _check(ok: bool, group: str, knob: str, value: Any, rule: str) -> None:
    if not ok:
        raise ValueError(f"{group}.{knob} = {value!r}: {rule}")


@dataclass
class Policy:
    """The checkpoint trained and how its forward passes run.

    Args:
        model_name_or_path: a hub id or a local folder (``save_pretrained`` layout); also the data's feature extractor.
        family: the policy family: null (from the checkpoint's ``config.model_type``), a registered name
            (qwen2_audio, qwen2_5_omni, qwen3_omni, audio_flamingo3, phi4_multimodal) or a class path.
        dtype: weights dtype (bfloat16 on a GPU).
        attn_implementation: transformers' attention (sdpa, flash_attention_2, eager); null: the checkpoint's.
        gradient_checkpointing: recompute activations in backward (less memory, ~30 % more compute).
        lora: a peft LoRA adapter, e.g. ``{r: 8, lora_alpha: 16}`` (the reference is the adapter switched off).
        template: the prompt template (``plain``: the paper's answer-only prompt; ``think``; or a format string).
        think: the paper's think variant: the think prompt and, in GRPO, the think-format reward.
        with_audio: false: the audio-free ablation (the question text alone; linked to the data's).
        share_prompt: each prompt (its audio encoded once) computed once for its G completions, in rollout and
            update; false: every completion runs the whole sequence (the plain reference, same numbers).
    """

    model_name_or_path: str
    family: str | None = None
    dtype: Dtype = "float32"
    attn_implementation: str | None = None
    gradient_checkpointing: bool = False
    lora: dict | None = None
    template: str = "plain"
    think: bool = False
    with_audio: bool = True
    share_prompt: bool = True

    def __post_init__(self) -> None:
        _check(bool(self.model_name_or_path), "policy", "model_name_or_path", self.model_name_or_path,
               "a hub id or a local folder is needed")
        _check(self.dtype in DTYPES, "policy", "dtype", self.dtype, f"one of {', '.join(DTYPES)}")
        if self.family is not None:
            _check(self.family in FAMILIES or "." in self.family, "policy", "family", self.family,
                   f"a registered family ({', '.join(FAMILIES)}), a class path, or null")
        check_local(self.model_name_or_path)  # a mistyped local folder fails now, never as a hub lookup


@dataclass
class Sampling:
    """How the rollout samples its G completions per prompt.

    Args:
        G: completions per prompt (the group); at least 2, or every advantage is 0.
        temperature: sampling temperature (> 0); the update scores at the same temperature.
        top_p: nucleus sampling, in (0, 1].
        top_k: null keeps the checkpoint's generation config (transformers' 50 where it sets none);
            0 samples from the whole distribution the update scores.
        max_new_tokens: the longest completion.
        keep_logprobs: the rollout keeps the log-probabilities the engine sampled from (its raw logits at the
            sampling temperature; ``generate`` then holds the logits of every step: N x T x vocabulary floats), and
            every step logs their disagreement with the update's (``train/rollout_agreement/*``).
            ``optimization.behaviour_correction`` needs them and switches this on.
    """

    G: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    max_new_tokens: int = 256
    keep_logprobs: bool = False

    def __post_init__(self) -> None:
        _check(self.G >= 2, "sampling", "G", self.G, "needs at least 2 completions per prompt (one alone has "
               "advantage 0: nothing would train)")
        _check(self.temperature > 0, "sampling", "temperature", self.temperature, "must be > 0")
        _check(0 < self.top_p <= 1, "sampling", "top_p", self.top_p, "must be in (0, 1]")
        _check(self.top_k is None or self.top_k >= 0, "sampling", "top_k", self.top_k, "must be >= 0 or null")
        _check(self.max_new_tokens >= 1, "sampling", "max_new_tokens", self.max_new_tokens, "must be >= 1")


@dataclass
class Optimization:
    """The optimizer step: AdamW with linear decay (the paper's TRL defaults), accumulation and safeguards.

    Args:
        lr: peak learning rate.
        weight_decay: AdamW's decoupled weight decay.
        warmup_steps: linear warm-up in optimizer steps, then linear decay to 0 at ``trainer.max_steps``.
        max_grad_norm: gradient clipping (0: none); under DeepSpeed its config's gradient_clipping must equal it.
        gradient_accumulation_steps: batches (rollouts) per optimizer step.
        micro_batch_prompts: prompts (× G completions) per forward/backward of the update.
        num_iterations: optimizer steps per rollout (μ; > 1 makes the clipping bite).
        max_bad_steps: stop after this many optimizer steps in a row with a non-finite loss or gradient.
        router_aux_loss_coef: mixture-of-experts families: weight of the routers' load-balancing loss (0: off).
        behaviour_correction: null (the update's own log-probs are the behaviour policy, as before) or "tis":
            truncated importance sampling against the rollout engine's log-probs, w_t = min(exp(logp_old_t -
            logp_rollout_t), tis_cap) on the policy-gradient term (verl's and TRL's correction for vLLM rollouts).
        tis_cap: the truncation C of ``behaviour_correction: tis`` (verl's and TRL's 2.0).
    """

    lr: float = 1e-6
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    gradient_accumulation_steps: int = 1
    micro_batch_prompts: int = 1
    num_iterations: int = 1
    max_bad_steps: int = 3
    router_aux_loss_coef: float = 0.0
    behaviour_correction: str | None = None
    tis_cap: float = 2.0

    def __post_init__(self) -> None:
        for knob in ("lr", "weight_decay", "warmup_steps", "max_grad_norm", "router_aux_loss_coef"):
            _check(getattr(self, knob) >= 0, "optimization", knob, getattr(self, knob), "must be >= 0")
        for knob in ("gradient_accumulation_steps", "micro_batch_prompts", "num_iterations", "max_bad_steps"):
            _check(getattr(self, knob) >= 1, "optimization", knob, getattr(self, knob), "must be >= 1")
        _check(self.behaviour_correction in (None, "tis"), "optimization", "behaviour_correction",
               self.behaviour_correction, "null or 'tis'")
        _check(self.tis_cap > 0, "optimization", "tis_cap", self.tis_cap, "must be > 0")


@dataclass
class Selection:
    """Which sampled groups train: DAPO's dynamic sampling.

    Args:
        dynamic_sampling: drop groups whose G rewards (``metric``) are all equal and draw more batches until
            the step has its prompts; a step then spans a varying number of batches.
        max_extra_draws: at most this many extra batches per optimizer step.
        metric: "total" (the weighted reward) or one reward's name (e.g. accuracy: DAPO's rule).
    """

    dynamic_sampling: bool = False
    max_extra_draws: int = 4
    metric: str = "total"

    def __post_init__(self) -> None:
        _check(self.max_extra_draws >= 0, "selection", "max_extra_draws", self.max_extra_draws, "must be >= 0")


RELEVANCE = ("logp_gap",)


@dataclass
class Grounding:
    """Audio-grounded training signals: which completion tokens (relevance) and which questions (contribution) the
    policy gradient trusts. Both off by default (the run is then plain GRPO, bit for bit).

    Args:
        relevance: null (off) or "logp_gap": per completion token, r_t = |log pi(y_t | q, audio) - log pi(y_t | q)|,
            the sampled token's log-probability gap with and without the audio under the sampling policy (one extra
            no-grad forward per rollout over the completions, audio-free prompt), turned into a weight on the
            policy-gradient term (the KL term unchanged).
        relevance_keep: the fraction of each scope's tokens kept, highest relevance first, in (0, 1]; 1 keeps all.
        relevance_scope: "sequence" (the top fraction of each completion) or "group" (of a prompt's G completions).
        relevance_threshold: set: keep the tokens with r_t >= it instead of a top fraction.
        relevance_floor: the weight of the tokens not kept, in [0, 1) (0: masked out).
        contribution: each prompt's audio-free pass rate from ``contribution_samples`` extra audio-free samples,
            against its group's own pass rate (the accuracy rule), labelled as ``r1aqa audio-contribution`` labels
            (needs_audio / answerable_without_audio / unsolved); the group's advantages times its label's weight.
        contribution_samples: audio-free samples per prompt (k; the offline tool's default is 8).
        contribution_margin: the pass-rate gain from the audio that makes a question needs_audio.
        contribution_weights: {label: weight} multiplying a group's advantages (a label not named: 1); default
            {answerable_without_audio: 0.0}: such groups are dropped (no policy gradient; under dynamic sampling
            they count as not informative and are replaced by more draws).
    """

    relevance: str | None = None
    relevance_keep: float = 0.5
    relevance_scope: str = "sequence"
    relevance_threshold: float | None = None
    relevance_floor: float = 0.0
    contribution: bool = False
    contribution_samples: int = 8
    contribution_margin: float = 0.25
    contribution_weights: dict[str, float] = field(default_factory=lambda: {"answerable_without_audio": 0.0})

    def __post_init__(self) -> None:
        g = "grounding"
        _check(self.relevance in (None, *RELEVANCE), g, "relevance", self.relevance,
               f"null or one of {', '.join(RELEVANCE)}")
        _check(0 < self.relevance_keep <= 1, g, "relevance_keep", self.relevance_keep, "must be in (0, 1]")
        _check(self.relevance_scope in RELEVANCE_SCOPES, g, "relevance_scope", self.relevance_scope,
               f"one of {', '.join(RELEVANCE_SCOPES)}")
        _check(self.relevance_threshold is None or self.relevance_threshold >= 0, g, "relevance_threshold",
               self.relevance_threshold, "must be >= 0 or null")
        _check(0 <= self.relevance_floor < 1, g, "relevance_floor", self.relevance_floor, "must be in [0, 1)")
        _check(self.contribution_samples >= 1, g, "contribution_samples", self.contribution_samples, "must be >= 1")
        _check(0 < self.contribution_margin <= 1, g, "contribution_margin", self.contribution_margin,
               "must be in (0, 1]")
        weights = dict(self.contribution_weights or {})
        _check(set(weights) <= set(LABELS), g, "contribution_weights", weights,
               f"labels among {', '.join(LABELS)}")
        _check(all(float(w) >= 0 for w in weights.values()), g, "contribution_weights", weights, "weights >= 0")
        self.contribution_weights = {k: float(v) for k, v in weights.items()}


@dataclass
class Evaluation:
    """Greedy answers for validation and ``r1aqa eval``.

    Args:
        max_new_tokens: the longest answer.
        stop_at_answer: stop a row right after ``</answer>`` (the answer is read from the tag).
    """

    max_new_tokens: int = 256
    stop_at_answer: bool = True

    def __post_init__(self) -> None:
        _check(self.max_new_tokens >= 1, "evaluation", "max_new_tokens", self.max_new_tokens, "must be >= 1")


GROUPS = {"policy": Policy, "sampling": Sampling, "optimization": Optimization, "selection": Selection,
          "grounding": Grounding, "evaluation": Evaluation}
# the earlier flat keyword -> its group (and name there): an old config or checkpoint is told where it went
MOVED = {
    **{f.name: ("policy", f.name) for f in fields(Policy)},
    **{f.name: ("sampling", f.name) for f in fields(Sampling)},
    **{f.name: ("optimization", f.name) for f in fields(Optimization)},
    "dynamic_sampling": ("selection", "dynamic_sampling"), "max_extra_draws": ("selection", "max_extra_draws"),
    "dynamic_sampling_metric": ("selection", "metric"),
    "eval_max_new_tokens": ("evaluation", "max_new_tokens"), "eval_stop_at_answer": ("evaluation", "stop_at_answer"),
    "reward_weights": ("rewards", None), "scale_rewards": ("advantage", None),
    "beta": ("loss", "beta"), "epsilon_low": ("loss", "epsilon_low"), "epsilon_high": ("loss", "epsilon_high"),
    "loss_type": ("loss", "aggregation"), "importance_sampling_level": ("loss", "importance_sampling_level"),
}


def group(cls, value):
    """A group from the dataclass itself, a dict of its fields, or (``Policy`` only) a model path."""
    if isinstance(value, cls):
        return value
    if cls is Policy and isinstance(value, str):
        return Policy(value)
    if isinstance(value, dict):
        return cls(**value)
    if value is None:
        return cls()
    raise TypeError(f"expected a {cls.__name__} or a dict of its fields, got {type(value).__name__}")


def refuse_flat(legacy: dict[str, Any]) -> None:
    """Keywords of the earlier flat signature fail with where each one lives now."""
    if not legacy:
        return
    where = []
    for k in legacy:
        if k not in MOVED:
            where.append(f"{k}: no such setting")
            continue
        g, name = MOVED[k]
        if g in GROUPS:
            where.append(f"{k} -> {g}.{name}")
        elif name:
            where.append(f"{k} -> {g}: init_args.{name}")
        else:
            where.append(f"{k} -> {g}")
    raise TypeError("settings moved to their groups (see docs/configuration.md): " + "; ".join(where))


def regroup(flat: dict[str, Any]) -> dict[str, Any]:
    """Flat hyper-parameters of an earlier checkpoint as the grouped ones (the groups' fields only)."""
    out: dict[str, Any] = {k: v for k, v in flat.items() if k in GROUPS}
    for k, v in flat.items():
        if k in MOVED and MOVED[k][0] in GROUPS:
            g, name = MOVED[k]
            out.setdefault(g, {})
            if isinstance(out[g], dict):
                out[g].setdefault(name, v)
    return out
