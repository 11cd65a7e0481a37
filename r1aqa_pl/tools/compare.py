"""Recipes compared from the same warm start on the synthetic set, over seeds (``make compare``,
``make compare-recipes``).

Runs of the real entry point (``python -m r1aqa_pl fit --config ...``), each in its own folder
``<out>/seed<N>/<arm>``:

* ``grpo``          -- ``configs/demo.yaml`` as it is (the model settings the demo uses);
* ``sft``           -- ``configs/demo.yaml`` with the ``configs/demo_sft.yaml`` overlay: cross-entropy on
  the right answer, prompt masked;
* ``grpo_noaudio``  -- ``with_audio: false`` (the model's, linked to the data's): trained and evaluated on
  the question text alone, which measures how much of the accuracy the audio is responsible for;
* ``grpo_ds``       -- dynamic sampling (zero-variance groups dropped, more prompts drawn);
* ``grpo_curriculum`` -- the first epoch easy to hard by the warm start's pass rate with audio;
* ``grpo_filtered`` -- questions the warm start answers as well without the audio seen a quarter as
  often (``FILTER_WEIGHTS``);
* ``sft_grpo``      -- SFT then GRPO: the two arms one after the other, each for half the steps, GRPO from
  SFT's last weights (so it sees the same prompts as the others);
* ``grpo_relevance`` -- audio-relevance weighting (``grounding.relevance: logp_gap``, ``relevance_keep`` 0.5): the
  policy gradient on the half of each completion's tokens whose log-prob the audio changes most;
* ``grpo_contribution`` -- online audio contribution (``grounding.contribution``): each step, groups the policy
  answers as well without the audio (8 extra audio-free samples per prompt) weigh ``FILTER_WEIGHTS`` (a quarter),
  the online twin of ``grpo_filtered``;
* ``grpo_think``    -- think mode (``policy.think``, 32 new tokens in training and validation), the next one's baseline;
* ``grpo_think_length`` -- think mode plus the ``think_length`` reward (``configs/demo_think_length.yaml``: a
  budget of 2 words of thinking for a question the group always answers, 10 for one it never does, scaled to the
  32 tokens; the documented 50-150 words could never be exceeded there). Both think arms start from ``warm-think``
  (``demo.prepare(think=True)``: a warm start that thinks, at several lengths, before it answers).

**Arms are data** (:class:`Arm`, :data:`ARM_SPECS`): a name, a label, the ``fit`` overrides and config overlays
that make it differ from the shared command, whether it reads the audio-contribution labels, its warm start, and
for an arm made of stages the arms it runs in turn. A new arm is one entry in :data:`ARM_SPECS`, or a YAML file given as
``--arms_file`` (``name: {label: ..., overrides: [--model.init_args.x, "true"], configs: [...], trainer: grpo}``),
then named in ``--arms``.

**Several validation sets** (``--val_sets '{"mmau": "test-mini.json", "shift": "test-shifted.json"}'``, files of
each seed's data folder; the config's monitor set, ``mmau`` in the demo, stays the plain ``val/acc/*``): every run
is scored on each (``val/<label>/acc/*``), the tables give each set's start and end over seeds, and a set whose
records carry ``shift`` gets its accuracy per kind of shift (from the prediction files). ``--shift true``
(``make compare-shift``) is SFT vs GRPO vs SFT then GRPO, in-distribution (test-mini) and on the synthetic
shifted set (``test-shifted.json``: held-out wordings, other options, sounds outside the training ranges,
families asked in another form; :mod:`r1aqa_pl.data.synth`), with head-to-head differences per seed.

``grpo_curriculum`` and ``grpo_filtered`` (any arm with ``labels``) read ``r1aqa audio-contribution`` labels
of the training set from the warm start, computed once per seed as the first jobs. Each seed has its own
cache (data, tiny policy, warm start: ``demo.prepare(seed=N)``) and drives its runs (``--seed_everything N``);
all of a seed's runs start from the same warm weights (checked by hash) and are validated on the same test
set, before training (step 0) and every ``eval_every`` steps. ``--jobs 2`` runs two at a time with one thread each.

**Samples seen = prompts seen.** A GRPO optimizer step sees ``batch_size × gradient_accumulation_steps``
prompts, each with G sampled completions; an SFT step sees ``batch_size`` prompts, each with its one
right answer. SFT gets ``batch_size = GRPO batch_size × gradient_accumulation_steps`` and the same number
of optimizer steps, so both see the same prompts (the same seeded order: same data seed and batch size).
GRPO scores G times as many completions; SFT is told the answer, GRPO only whether it was right.

Writes ``<out>/compare.json`` (per seed and run: command, wall time, prompts seen, per-domain accuracy at
start and end, best, steps to reach ``TARGET``, the curves; per validation set and kind of shift where there
are several), ``<out>/compare.md`` (over several seeds a table of means and spreads, then one table per seed)
and ``<out>/compare_seed<N>.png`` (the curves, one panel per domain). In a notebook::

    from r1aqa_pl.tools import compare
    results = compare.load("../checkpoints/compare/compare.json")
    print(compare.seeds_table(results))
    compare.plot_comparison(results["seeds"]["0"])      # a matplotlib Figure

Think mode and the audio-free ablation of the demo need no config file of their own, they are overrides::

    python -m r1aqa_pl fit --config configs/demo.yaml --model.init_args.policy.think true \\
        --model.init_args.sampling.max_new_tokens 32 --model.init_args.evaluation.max_new_tokens 32 \\
        --trainer.logger.init_args.name think
    python -m r1aqa_pl fit --config configs/demo.yaml --model.init_args.policy.with_audio false \\
        --trainer.logger.init_args.name noaudio

(``think: true`` swaps the prompt for the think prompt and the format reward for ``think_format``; the
demo's warm start only ever wrote ``<answer>…</answer>``, so expect the think-format reward near 0 at first.)
"""

from __future__ import annotations

import inspect
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

from r1aqa_pl.benchmarks.mmau import DOMAINS

ROOT = Path.cwd()  # runs read configs/ and write checkpoints/ relative to the checkout they start in

COLUMNS = (*DOMAINS, "total")
ACC = {c: f"val/acc/{c}" for c in COLUMNS}
# the filtered arm: questions the starting policy answers as well without the audio are seen a quarter as often
FILTER_WEIGHTS = {"answerable_without_audio": 0.25}
# the think arms: think prompt and think_format (policy.think), 32 new tokens instead of the answer's 8
THINK_OVERRIDES = ("--model.init_args.policy.think", "true", "--model.init_args.sampling.max_new_tokens", "32",
                   "--model.init_args.evaluation.max_new_tokens", "32")
# the length reward (configs/demo_think_length.yaml: a reward list is a config, not a command-line value) scaled to
# that room: 2 words of thinking for a question the group always answers, 10 for one it never does
THINK_LENGTH_CONFIG = "configs/demo_think_length.yaml"


@dataclass(frozen=True)
class Arm:
    """One arm of a comparison: how its ``fit`` command differs from the one every arm shares (same warm start,
    seed, data, steps, validation).

    Args:
        label: its name in tables and plots.
        trainer: ``grpo`` (the GRPO config) or ``sft`` (the SFT overlay on it, with GRPO's prompts per optimizer
            step as its batch, so that both see the same prompts).
        overrides: more ``fit`` arguments (e.g. ``["--model.init_args.selection.dynamic_sampling", "true"]``).
        configs: more config overlays, after the trainer's.
        labels: it reads the training set's ``r1aqa audio-contribution`` labels (``--data.init_args.audio_contribution``
            is added; the labels are computed from the warm start once per seed, first).
        with_audio: False for an audio-free arm (its overrides must switch the policy's ``with_audio`` off).
        stages: instead of one run, these arms one after another, the steps split evenly, each from the last
            weights of the one before (``sft_grpo``: SFT then GRPO).
        style: matplotlib (color, line style).
        warm: its start, a folder of the seed's cache: ``warm`` (answers only) or ``warm-think`` (thinks before it
            answers: ``demo.prepare(think=True)``, the think arms' start).
    """

    label: str
    trainer: str = "grpo"
    overrides: tuple[str, ...] = ()
    configs: tuple[str, ...] = ()
    labels: bool = False
    with_audio: bool = True
    stages: tuple[str, ...] = ()
    style: tuple[str, str] = ("black", "-")
    warm: str = "warm"


WARM_FOLDERS = {"warm": {}, "warm-think": {"think": True}}  # an arm's start -> what demo.prepare builds it with

ARM_SPECS: dict[str, Arm] = {
    "grpo": Arm("GRPO (audio)", style=("tab:blue", "-")),
    "sft": Arm("SFT (audio)", trainer="sft", style=("tab:orange", "--")),
    # the data's with_audio follows the model's (linked)
    "grpo_noaudio": Arm("GRPO (no audio)", overrides=("--model.init_args.policy.with_audio", "false"),
                        with_audio=False, style=("tab:gray", ":")),
    # a step's batch may take more than one batch of prompts: validate on the same optimizer steps anyway
    "grpo_ds": Arm("GRPO + dynamic sampling", overrides=("--model.init_args.selection.dynamic_sampling", "true"),
                   style=("tab:green", "-")),
    "grpo_curriculum": Arm("GRPO + curriculum", overrides=("--data.init_args.curriculum_epochs", "1"), labels=True,
                           style=("tab:purple", "-.")),
    "grpo_filtered": Arm("GRPO + audio-contribution weights",
                         overrides=("--data.init_args.label_weights", json.dumps(FILTER_WEIGHTS)), labels=True,
                         style=("tab:red", "--")),
    "sft_grpo": Arm("SFT then GRPO", stages=("sft", "grpo"), style=("tab:brown", "-")),
    # audio-grounded GRPO (issue 30): the policy gradient on the half of each completion's tokens whose log-prob
    # the audio changes most
    "grpo_relevance": Arm("GRPO + audio-relevance weighting",
                          overrides=("--model.init_args.grounding.relevance", "logp_gap",
                                     "--model.init_args.grounding.relevance_keep", "0.5"),
                          style=("tab:cyan", "-")),
    # the online twin of grpo_filtered: each step, groups the policy answers as well without the audio (from 8
    # extra audio-free samples per prompt) weigh a quarter, as FILTER_WEIGHTS does from the warm start's labels
    "grpo_contribution": Arm("GRPO + online audio contribution",
                             overrides=("--model.init_args.grounding.contribution", "true",
                                        "--model.init_args.grounding.contribution_weights", json.dumps(FILTER_WEIGHTS)),
                             style=("tab:olive", "--")),
    # think mode, the baseline of the length reward: room for a short thought before the 8-token answer
    "grpo_think": Arm("GRPO, think mode", overrides=THINK_OVERRIDES, style=("tab:pink", "-"), warm="warm-think"),
    "grpo_think_length": Arm("GRPO, think mode + length reward",
                             overrides=THINK_OVERRIDES, configs=(THINK_LENGTH_CONFIG,),
                             style=("tab:pink", "--"), warm="warm-think"),
}
ARMS = {name: arm.label for name, arm in ARM_SPECS.items()}  # name -> label
DEFAULT_ARMS = ("grpo", "sft", "grpo_noaudio")           # make compare
RECIPE_ARMS = ("grpo", "grpo_ds", "grpo_curriculum", "grpo_filtered", "grpo_relevance", "grpo_contribution",
               "grpo_think", "grpo_think_length")  # make compare-recipes
SHIFT_ARMS = ("sft", "grpo", "sft_grpo")  # make compare-shift
# make compare-shift: in-distribution (the monitor set, the plain val/acc/*) and the synthetic shifted set
SHIFT_SETS = {"mmau": "test-mini.json", "shift": "test-shifted.json"}
TARGET = 0.75  # "steps to reach": the first validated step with total accuracy >= TARGET


def load_arms(path: str | Path | None = None, extra: dict | None = None) -> dict[str, Arm]:
    """:data:`ARM_SPECS` plus the arms of a YAML (or JSON) file and of ``extra``, each ``name: {field: value}``
    with :class:`Arm`'s fields (``label`` required); an unknown field, trainer or stage is refused by name."""
    import yaml

    specs = dict(ARM_SPECS)
    given = dict(yaml.safe_load(Path(path).read_text()) or {}) if path else {}
    given.update(extra or {})
    known = {f.name for f in fields(Arm)}
    for name, spec in given.items():
        if not isinstance(spec, dict) or "label" not in spec:
            raise ValueError(f"arm {name!r}{f' in {path}' if path else ''}: a mapping with at least a label")
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ValueError(f"arm {name!r}: unknown field(s) {unknown}; known: {sorted(known)}")
        specs[name] = Arm(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})
    for name, arm in specs.items():
        if arm.trainer not in ("grpo", "sft"):
            raise ValueError(f"arm {name!r}: trainer must be grpo or sft, got {arm.trainer!r}")
        if arm.warm not in WARM_FOLDERS:
            raise ValueError(f"arm {name!r}: warm must be one of {sorted(WARM_FOLDERS)}, got {arm.warm!r}")
        bad = [s for s in arm.stages if s not in specs or specs[s].stages]
        if bad:
            raise ValueError(f"arm {name!r}: stages {bad} are not single-run arms")
    return specs


# ---------------------------------------------------------------- planning

def _init_args(cfg: dict, key: str) -> dict:
    part = cfg.get(key) or {}
    return part.get("init_args", part) if isinstance(part, dict) else {}


def eval_interval(steps: int, every: int) -> int:
    """The largest divisor of ``steps`` in [2, ``every``] (so that the last step is validated), else ``steps``.

    Never 1: a validation after every step would cost more than the training.
    """
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    return next((d for d in range(min(every, steps), 1, -1) if steps % d == 0), steps)


def plan(out: str | Path, demo_dir: str | Path, steps: int | None = None, eval_every: int | None = None,
         grpo_config: str | Path = "configs/demo.yaml", sft_config: str | Path = "configs/demo_sft.yaml",
         arms: list[str] | None = None, seed: int = 0, labels: str | Path | None = None,
         val_sets: dict[str, str] | None = None, specs: dict[str, Arm] | None = None) -> dict:
    """The runs of one seed: config, CLI overrides, log folder, and the accounting of prompts seen.

    ``steps`` defaults to the GRPO config's ``trainer.max_steps``; ``eval_every`` (optimizer steps) to its
    ``val_check_interval`` (batches) divided by gradient accumulation, lowered to a divisor of ``steps``
    so that the last step is validated (:func:`eval_interval`). ``labels`` is the audio-contribution file
    of the training set (needed by arms with ``labels``: ``grpo_curriculum`` and ``grpo_filtered``).
    ``val_sets`` (label -> file name in the seed's data folder) validates on several sets instead of test-mini
    alone; ``specs`` is the arm registry (default :data:`ARM_SPECS`; see :func:`load_arms`). An arm made of
    stages gets ``stages`` (one run each, ``<out>/<arm>__<k>_<stage>``, the steps split evenly) in place of
    one command.
    """
    import yaml

    specs = specs or ARM_SPECS
    grpo_config, sft_config = Path(grpo_config), Path(sft_config)
    cfg = yaml.safe_load((ROOT / grpo_config if not grpo_config.is_absolute() else grpo_config).read_text())
    model, data, trainer = _init_args(cfg, "model"), _init_args(cfg, "data"), cfg.get("trainer") or {}
    accum = int((model.get("optimization") or {}).get("gradient_accumulation_steps", 1))
    batch = int(data.get("batch_size", 1))
    G = int((model.get("sampling") or {}).get("G", 8))
    steps = int(steps or trainer.get("max_steps") or 100)
    vci = trainer.get("val_check_interval") or 25
    every_asked = int(eval_every or max(1, int(vci) // accum))
    every = eval_interval(steps, every_asked)
    out, demo_dir = Path(out), Path(demo_dir)
    data_dir = demo_dir / "data"
    chosen = list(arms or DEFAULT_ARMS)
    unknown = sorted(set(chosen) - set(specs))
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown}; known: {list(specs)}")
    if any(specs[s].labels for a in chosen for s in (specs[a].stages or [a])) and not labels:
        names = [a for a in specs if specs[a].labels]
        raise ValueError(f"{' and '.join(names)} need the training set's audio-contribution labels")
    val_file = (json.dumps({k: str(data_dir / f) for k, f in val_sets.items()}) if val_sets
                else str(data_dir / "test-mini.json"))

    def single(name: str, spec: Arm, n_steps: int, start: Path, log_name: str) -> dict:
        sft = spec.trainer == "sft"
        batches_per_step = 1 if sft else accum
        n_every = eval_interval(n_steps, every_asked) if n_steps != steps else every
        overrides = [
            "--seed_everything", str(seed),
            "--data.init_args.seed", str(seed),
            "--model.init_args.policy.model_name_or_path", str(start),
            "--data.init_args.train_file", str(data_dir / "train.jsonl"),
            "--data.init_args.val_file", val_file,
            "--trainer.max_steps", str(n_steps),
            "--trainer.val_check_interval", str(n_every * batches_per_step),
            "--trainer.check_val_every_n_epoch", "null",
            "--trainer.num_sanity_val_steps", "-1",
            "--trainer.default_root_dir", str(out / log_name),
            "--trainer.logger.init_args.save_dir", str(out),
            "--trainer.logger.init_args.name", log_name,
            "--trainer.logger.init_args.version", "0",
            "--trainer.enable_progress_bar", "false",
        ]
        if sft:  # GRPO's prompts per optimizer step as one batch: the same prompts, in the same seeded order
            overrides += ["--data.init_args.batch_size", str(batch * accum)]
        if spec.labels:
            overrides += ["--data.init_args.audio_contribution", str(labels)]
        overrides += list(spec.overrides)
        configs = [str(grpo_config), *([str(sft_config)] if sft else []), *spec.configs]
        prompts = n_steps * batch * accum
        run = {"configs": configs, "overrides": overrides, "prompts_seen": prompts, "warm": spec.warm,
               "completions_seen": prompts * (1 if sft else G), "batch_size": batch * accum if sft else batch,
               "with_audio": spec.with_audio, "steps": n_steps, "eval_every": n_every, "label": spec.label,
               "style": list(spec.style)}
        run["command"] = [sys.executable, "-m", "r1aqa_pl", "fit", *(a for c in configs for a in ("--config", c)),
                          *overrides]
        run["log_dir"] = str(out / log_name / "version_0")
        return run

    runs = {}
    for name in chosen:
        spec = specs[name]
        if not spec.stages:
            runs[name] = single(name, spec, steps, demo_dir / spec.warm, name)
            continue
        k = len(spec.stages)
        if steps // k < 2:
            raise ValueError(f"arm {name!r}: {steps} steps cannot be split over its {k} stages (2 each at least)")
        shares = [steps // k] * (k - 1) + [steps - (steps // k) * (k - 1)]
        stages, start = [], demo_dir / specs[spec.stages[0]].warm
        for i, (stage, n_steps) in enumerate(zip(spec.stages, shares)):
            r = single(stage, specs[stage], n_steps, start, f"{name}__{i + 1}_{stage}")
            stages.append({**r, "arm": stage})
            start = Path(r["log_dir"]) / "checkpoints" / "last_hf"  # HFCheckpoint's last weights
        runs[name] = {"stages": stages, "label": spec.label, "with_audio": spec.with_audio, "steps": steps,
                      "style": list(spec.style),
                      "prompts_seen": sum(r["prompts_seen"] for r in stages),
                      "completions_seen": sum(r["completions_seen"] for r in stages),
                      "command": [r["command"] for r in stages], "log_dir": [r["log_dir"] for r in stages]}
    return {
        "steps": steps,
        "eval_every": every,
        "G": G,
        "gradient_accumulation_steps": accum,
        "grpo_batch_size": batch,
        "demo_dir": str(demo_dir),
        "out": str(out),
        "seed": seed,
        "val_sets": dict(val_sets) if val_sets else None,
        "runs": runs,
    }


# ---------------------------------------------------------------- results


def summarize(scalars: dict[str, list[tuple[int, float]]], label: str | None = None) -> dict:
    """Per-domain accuracy at the first and last validation, the best total, and the curves (x: optimizer
    steps, as the modules and BenchmarkEvaluation log them); of the set ``label`` (``val/<label>/acc/*``), else
    the plain ``val/acc/*`` (a run's only set, or its monitor set)."""
    tags = ACC if label is None else {c: f"val/{label}/acc/{c}" for c in COLUMNS}
    curves = {c: [[int(s), float(v)] for s, v in scalars.get(tag, [])] for c, tag in tags.items()}
    start = {c: (pts[0][1] if pts else None) for c, pts in curves.items()}
    end = {c: (pts[-1][1] if pts else None) for c, pts in curves.items()}
    total = curves["total"]
    best = max(total, key=lambda p: p[1]) if total else None
    steps = [p[0] for p in total]
    reached = next((p[0] for p in total if p[1] >= TARGET), None)
    out = {
        "start": start,
        "end": end,
        "start_step": steps[0] if steps else None,
        "end_step": steps[-1] if steps else None,
        "steps_to_target": reached,
        "best_total": None if best is None else {"step": best[0], "acc": best[1]},
        "curves": curves,
    }
    for tag in ("train/reward", "train/loss"):
        pts = scalars.get(tag)
        if pts:
            out[tag.replace("/", "_") + "_last"] = float(pts[-1][1])
    think = scalars.get("train/think_length")
    if think:  # words of thinking per completion, mean over the first and the last tenth of the logged steps
        n = max(1, len(think) // 10)
        out["think_words"] = {"first": sum(v for _, v in think[:n]) / n, "last": sum(v for _, v in think[-n:]) / n}
    return out


def merge_stages(parts: list[dict[str, list[tuple[int, float]]]], offsets: list[int]) -> dict:
    """The scalars of runs one after another as one run: each part's steps moved by its offset; a later part's
    own step 0 (its start, the earlier part's end) left out."""
    merged: dict[str, list[tuple[int, float]]] = {}
    for k, (scalars, offset) in enumerate(zip(parts, offsets)):
        for tag, pts in scalars.items():
            merged.setdefault(tag, []).extend((s + offset, v) for s, v in pts if k == 0 or s > 0)
    return merged


def _prediction_file(log_dir: str | Path, label: str, last: bool) -> Path | None:
    """The first or last validation's prediction file of set ``label`` in a run's log folder."""
    steps = {int(m[1]): f for f in Path(log_dir, "predictions", label).glob("val_step*.json")
             if (m := re.fullmatch(r"val_step(\d+)\.json", f.name))}
    files = [steps[k] for k in sorted(steps)]
    return (files[-1] if last else files[0]) if files else None


def shift_breakdown(records: list[dict]) -> dict:
    """Accuracy per kind of shift (``shift``) and, for a kind with several forms, per ``shift_detail``
    (``"form: yes/no"``), by MMAU's rule on each record's ``model_prediction``; with the question counts
    and a uniform guess's expected accuracy."""
    from r1aqa_pl.benchmarks.mmau import is_correct

    groups: dict[str, list[dict]] = {}
    details: dict[str, set] = {}
    for r in records:
        if "shift" in r:
            groups.setdefault(r["shift"], []).append(r)
            details.setdefault(r["shift"], set()).add(r.get("shift_detail"))
    for kind in list(groups):
        if len(details[kind]) > 1:
            for r in groups[kind]:
                groups.setdefault(f"{kind}: {r['shift_detail']}", []).append(r)
    return {g: {"acc": sum(is_correct(r.get("model_prediction"), r["answer"], r["choices"]) for r in rs) / len(rs),
                "n": len(rs), "chance": sum(1 / len(r["choices"]) for r in rs) / len(rs)}
            for g, rs in groups.items()}


def run_summary(r: dict, labels: list[str] | None = None) -> dict:
    """A finished run's (or staged arm's) summary: :func:`summarize` of its monitor set; with several validation
    sets, each set's (``sets``) and, where a set's records carry ``shift``, accuracy per kind of shift at the
    first and last validation (``shifts``)."""
    from r1aqa_pl.eval import runs

    stages = r.get("stages") or [r]
    parts = [runs.load_scalars(st["log_dir"], version=st["log_dir"]) for st in stages]
    offsets = [sum(st["steps"] for st in stages[:k]) for k in range(len(stages))]
    scalars = merge_stages(parts, offsets) if len(stages) > 1 else parts[0]
    out = summarize(scalars)
    if labels:
        out["sets"] = {label: summarize(scalars, label) for label in labels}
        out["shifts"] = {}
        for label in labels:
            first = _prediction_file(stages[0]["log_dir"], label, last=False)
            last = _prediction_file(stages[-1]["log_dir"], label, last=True)
            if first and last:
                start, end = (shift_breakdown(json.loads(f.read_text())) for f in (first, last))
                if end:
                    out["shifts"][label] = {"start": start, "end": end, "end_file": str(last)}
    if len(stages) > 1:  # a stage starts where the one before ended (its own step 0 validates the handoff)
        out["handoff"] = [{"end": p.get(ACC["total"], [[None, None]])[-1][1],
                           "next_start": q.get(ACC["total"], [[None, None]])[0][1]} for p, q in zip(parts, parts[1:])]
    return out


def chance(val_file: str | Path) -> dict:
    """Expected accuracy of a uniform random guess per domain (mean of 1 / number of choices)."""
    from r1aqa_pl.data.formats import read_questions

    qs = read_questions(val_file)
    out = {}
    for c in COLUMNS:
        sel = [q for q in qs if c == "total" or q.domain == c]
        out[c] = sum(1 / len(q.choices) for q in sel) / len(sel) if sel else None
    return out


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _label(name: str, r: dict) -> str:
    return r.get("label") or ARMS.get(name, name)


def table(results: dict) -> str:
    """Markdown table: one row per run, each domain as ``start → end`` accuracy in %; with several validation
    sets, then each other set's total."""
    others = [k for k in (results.get("val_sets") or {}) if k != results.get("monitor", "mmau")]
    head = ["run", "steps", "prompts seen", *(f"{c} (%)" for c in COLUMNS), *(f"{k} total (%)" for k in others),
            "wall (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for name, r in results["runs"].items():
        cells = [
            _label(name, r),
            str(r.get("end_step", results.get("steps", "?"))),
            str(r.get("prompts_seen", "?")),
        ]
        cells += [f"{_pct(r['start'].get(c))} → {_pct(r['end'].get(c))}" for c in COLUMNS]
        for k in others:
            st = (r.get("sets") or {}).get(k) or {"start": {}, "end": {}}
            cells.append(f"{_pct(st['start'].get('total'))} → {_pct(st['end'].get('total'))}")
        wall = r.get("wall_s")
        cells.append("–" if wall is None else f"{wall:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    if results.get("chance"):
        cells = ["chance (uniform guess)", "", "", *(_pct(results["chance"].get(c)) for c in COLUMNS)]
        cells += [_pct(((results.get("chance_sets") or {}).get(k) or {}).get("total")) for k in others] + [""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _spread(values: list, digits: int = 1) -> str:
    """``mean ± sd [min–max]`` of the values that exist (``–`` when none; ``k/n`` noted when some are missing)."""
    import statistics

    have = [v for v in values if v is not None]
    if not have:
        return "–"
    mean = statistics.fmean(have)
    sd = statistics.stdev(have) if len(have) > 1 else 0.0
    f = f"{{:.{digits}f}}".format
    text = f"{f(mean)} ± {f(sd)} [{f(min(have))}–{f(max(have))}]" if len(have) > 1 else f(mean)
    return text + (f" ({len(have)}/{len(values)})" if len(have) < len(values) else "")


def seeds_table(results: dict) -> str:
    """Markdown table over seeds: one row per arm, total accuracy at start, end and best, the optimizer steps
    to reach ``TARGET`` (over the seeds that reached it) and wall time; each ``mean ± sd [min–max]``."""
    seeds = results["seeds"]
    arms = list(next(iter(seeds.values()))["runs"])
    head = [
        "run",
        "start total (%)",
        "end total (%)",
        "best total (%)",
        f"reached {100 * TARGET:.0f} %",
        f"steps to {100 * TARGET:.0f} %",
        "wall (s)",
    ]
    think = any(r.get("think_words") for p in seeds.values() for r in p["runs"].values())
    if think:
        head.append("think words, first → last tenth of steps")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for arm in arms:
        rs = [seeds[k]["runs"][arm] for k in seeds]
        words = [r.get("think_words") or {} for r in rs]
        words_cell = ("–" if not any(words) else
                      f"{_spread([w.get('first') for w in words])} → {_spread([w.get('last') for w in words])}")

        def pct(get, rs=rs):
            return [None if get(r) is None else 100 * get(r) for r in rs]

        reached = [r.get("steps_to_target") for r in rs]
        lines.append(
            "| "
            + " | ".join(
                [
                    _label(arm, rs[0]),
                    _spread(pct(lambda r: r["start"]["total"])),
                    _spread(pct(lambda r: r["end"]["total"])),
                    _spread(pct(lambda r: (r.get("best_total") or {}).get("acc"))),
                    f"{sum(x is not None for x in reached)}/{len(rs)}",
                    _spread(reached, 0),
                    _spread([r.get("wall_s") for r in rs], 0),
                    *([words_cell] if think else []),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


SET_TITLES = {"mmau": "in-distribution (test-mini)", "shift": "shifted (test-shifted)"}


def sets_table(results: dict) -> str:
    """Markdown table over seeds: one row per arm, each validation set's total accuracy at start and end and the
    drop from the first set to each other at the end, then wall time and prompts seen; ``mean ± sd [min–max]``."""
    seeds = results["seeds"]
    first = next(iter(seeds.values()))
    labels, arms = list(first["val_sets"]), list(first["runs"])
    head = ["run"]
    for k in labels:
        head += [f"{SET_TITLES.get(k, k)}: start (%)", "end (%)"]
    head += [f"{k} − {labels[0]} at end (pts)" for k in labels[1:]] + ["wall (s)", "prompts seen"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]

    def total(r, k, when):
        v = ((r.get("sets") or {}).get(k) or {}).get(when, {}).get("total")
        return None if v is None else 100 * v

    for arm in arms:
        rs = [seeds[k]["runs"][arm] for k in seeds]
        cells = [_label(arm, rs[0])]
        for k in labels:
            cells += [_spread([total(r, k, "start") for r in rs]), _spread([total(r, k, "end") for r in rs])]
        for k in labels[1:]:
            diffs = [None if total(r, k, "end") is None or total(r, labels[0], "end") is None
                     else total(r, k, "end") - total(r, labels[0], "end") for r in rs]
            cells.append(_spread(diffs))
        cells += [_spread([r.get("wall_s") for r in rs], 0), str(rs[0].get("prompts_seen", "?"))]
        lines.append("| " + " | ".join(cells) + " |")
    chances = [(first.get("chance_sets") or {}).get(k, {}).get("total") for k in labels]
    if any(c is not None for c in chances):
        cells = ["chance (uniform guess)"] + [x for c in chances for x in ("", _pct(c))]
        lines.append("| " + " | ".join(cells + [""] * (len(head) - len(cells))) + " |")
    return "\n".join(lines)


def shift_table(results: dict, label: str = "shift") -> str:
    """Markdown table over seeds: accuracy at the end per kind of shift (rows) and arm (columns),
    ``mean ± sd [min–max]`` in %, with each row's question count, a uniform guess and the warm start."""
    seeds = results["seeds"]
    arms = list(next(iter(seeds.values()))["runs"])
    ends = {arm: [((seeds[k]["runs"][arm].get("shifts") or {}).get(label) or {}).get("end", {}) for k in seeds]
            for arm in arms}
    starts = [((seeds[k]["runs"][arms[0]].get("shifts") or {}).get(label) or {}).get("start", {}) for k in seeds]
    groups = list(dict.fromkeys(g for es in ends.values() for e in es for g in e))
    order = {kind: i for i, kind in enumerate(("wording", "options", "sound", "form", "combined"))}
    groups.sort(key=lambda g: (order.get(g.split(":")[0], len(order)), g.split(":")[0], ":" in g, g))
    some = next(e for es in ends.values() for e in es if e) if groups else {}
    head = ["shift", "questions", "chance (%)", "warm start (%)", *(f"{_label(a, seeds[next(iter(seeds))]['runs'][a])}"
                                                                   " (%)" for a in arms)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for g in groups:
        cells = [g if ":" not in g else "↳ " + g.split(": ", 1)[1], str(some[g]["n"]), _pct(some[g]["chance"]),
                 _spread([None if g not in st else 100 * st[g]["acc"] for st in starts])]
        cells += [_spread([None if g not in e else 100 * e[g]["acc"] for e in ends[a]]) for a in arms]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def head_to_head(results: dict, pairs: list[tuple[str, str]] | None = None) -> str:
    """Markdown table: for each pair of arms (a, b) and validation set, a's end total minus b's on every seed
    (points), their mean, and on how many seeds a ends above b."""
    import statistics

    seeds = results["seeds"]
    first = next(iter(seeds.values()))
    arms, labels = list(first["runs"]), list(first.get("val_sets") or {"": None})
    pairs = pairs or [(a, b) for a, b in (("grpo", "sft"), ("sft_grpo", "sft"), ("sft_grpo", "grpo"))
                      if a in arms and b in arms]
    head = ["arms", "set", *(f"seed {k}" for k in seeds), "mean (pts)", "first above on"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for a, b in pairs:
        for k in labels:
            def end(r, k=k):
                st = (r.get("sets") or {}).get(k) if k else r
                v = (st or {}).get("end", {}).get("total")
                return None if v is None else 100 * v

            diffs = [None if end(seeds[s]["runs"][a]) is None or end(seeds[s]["runs"][b]) is None
                     else end(seeds[s]["runs"][a]) - end(seeds[s]["runs"][b]) for s in seeds]
            have = [d for d in diffs if d is not None]
            cells = [f"{_label(a, first['runs'][a])} − {_label(b, first['runs'][b])}", SET_TITLES.get(k, k) or "total",
                     *("–" if d is None else f"{d:+.1f}" for d in diffs),
                     f"{statistics.fmean(have):+.1f}" if have else "–",
                     f"{sum(d > 0 for d in have)}/{len(have)}" + (f" (tied on {sum(d == 0 for d in have)})"
                                                                 if any(d == 0 for d in have) else "")]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load(path: str | Path) -> dict:
    """A ``compare.json`` written by :func:`compare` (or a folder that holds one)."""
    p = Path(path)
    return json.loads((p / "compare.json" if p.is_dir() else p).read_text())


def plot_comparison(results: dict, title: str | None = None):
    """Accuracy (%) over optimizer steps, one panel per domain and total, one line per run."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.0 * len(COLUMNS), 3.6), layout="constrained")
    axes = fig.subplots(1, len(COLUMNS), sharey=True)
    for ax, col in zip(axes, COLUMNS):
        for name, r in results["runs"].items():
            pts = r.get("curves", {}).get(col) or []
            if not pts:
                continue
            color, ls = r.get("style") or ARM_SPECS.get(name, Arm(name)).style
            ax.plot(
                [p[0] for p in pts],
                [100 * p[1] for p in pts],
                color=color,
                ls=ls,
                marker="o",
                ms=3,
                lw=2 if col == "total" else 1.4,
                label=ARMS.get(name, name),
            )
        if results.get("chance") and results["chance"].get(col) is not None:
            ax.axhline(100 * results["chance"][col], color="black", lw=0.8, ls="-.", alpha=0.5, label="chance")
        ax.set(title=col, xlabel="optimizer step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    axes[0].legend(fontsize=8, loc="best")
    steps = results.get("steps")
    fig.suptitle(title or f"synthetic set: {' vs '.join(ARMS.get(n, n) for n in results['runs'])} ({steps} steps)")
    return fig


# ---------------------------------------------------------------- running


def _weights_hash(folder: Path) -> str:
    """sha256 of a Hugging Face folder's weight files: the start every run must share."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(folder.glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()


def _labels_job(demo_dir: Path, seed: int) -> dict:
    """The job that writes the training set's audio-contribution labels from the warm start (beside the data)."""
    path = demo_dir / "data" / "train.audio_contribution.jsonl"
    return {
        "command": [
            sys.executable,
            "-m",
            "r1aqa_pl",
            "audio-contribution",
            str(demo_dir / "warm"),
            str(demo_dir / "data" / "train.jsonl"),
            "--k",
            "8",
            "--seed",
            str(seed),
            "--out",
            str(path),
        ],
        "path": str(path),
    }


def _run_all(jobs: list[tuple[str, dict, Path, str | None]], parallel: int) -> None:
    """Run each (name, run, log file, name of the job it needs first), ``parallel`` at a time, each with
    cores / parallel threads; fill in ``wall_s`` and ``returncode``. A failed run stops the comparison with
    its log's last lines."""
    import os

    env = dict(os.environ)
    if parallel > 1:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // parallel))
    pending, active, done = list(jobs), [], set()
    while pending or active:
        ready = [j for j in pending if j[3] is None or j[3] in done]
        while ready and len(active) < parallel:
            job = ready.pop(0)
            pending.remove(job)
            name, r, log_file, _ = job
            print(f"[compare] {name}: {' '.join(r['command'])}\n[compare]   log: {log_file}", flush=True)
            f = open(log_file, "w")
            active.append(
                (
                    name,
                    r,
                    log_file,
                    f,
                    time.time(),
                    subprocess.Popen(r["command"], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env),
                )
            )
        time.sleep(1)
        for item in list(active):
            name, r, log_file, f, t0, proc = item
            if proc.poll() is None:
                continue
            active.remove(item)
            f.close()
            r["wall_s"], r["returncode"] = time.time() - t0, proc.returncode
            if proc.returncode != 0:
                for *_, other in active:
                    other.kill()
                tail = "".join(log_file.read_text().splitlines(keepends=True)[-30:])
                raise RuntimeError(f"run {name} failed (exit {proc.returncode}); last lines of {log_file}:\n{tail}")
            done.add(name)
            print(f"[compare]   {name} done in {r['wall_s']:.0f} s", flush=True)


def compare(
    out: str = "checkpoints/compare",
    steps: int | None = None,
    demo_dir: str = "checkpoints/demo",
    eval_every: int | None = None,
    arms: list[str] | None = None,
    seeds: list[int] | None = None,
    jobs: int = 1,
    grpo_config: str = "configs/demo.yaml",
    sft_config: str = "configs/demo_sft.yaml",
    n_train: int | None = None,
    n_test: int | None = None,
    warm_steps: int | None = None,
    val_sets: dict[str, str] | None = None,
    shift: bool = False,
    arms_file: str | None = None,
    dry_run: bool = False,
) -> dict:
    """Arms (default: GRPO with audio, SFT on the same prompts, GRPO without audio) from one warm start per
    seed; per-seed tables and, over several seeds, a table of means and spreads; JSON and PNG.

    Args:
        out: folder for the runs (``<out>/seed<N>/<run>/version_0``), compare.json, compare.md, compare.png.
        steps: optimizer steps per run (default: the GRPO config's trainer.max_steps).
        demo_dir: where ``demo.prepare`` builds (or finds) data/, tiny/ and warm/; with several seeds it must
            hold ``{seed}`` (default then: ``<out>/seed{seed}/demo``).
        eval_every: validate every this many optimizer steps (default: the GRPO config's val_check_interval).
        arms: names of :data:`ARM_SPECS` (grpo, sft, grpo_noaudio, grpo_ds, grpo_curriculum, grpo_filtered,
            sft_grpo) or of ``arms_file`` (default: the first three; with ``shift``: sft, grpo, sft_grpo).
        seeds: one seed drives each seed's data, tiny policy, warm start and runs (default: the cache's, else 0).
        jobs: runs side by side (each with cpu_count / jobs threads; 2 on 2 cores nearly halves the time).
        grpo_config: the GRPO config (all GRPO arms).
        sft_config: the SFT overlay, applied on top of ``grpo_config`` (run ``sft``).
        n_train: synthetic training questions (default: the prepared cache's, else demo.prepare's).
        n_test: synthetic test questions (default: the prepared cache's, else demo.prepare's).
        warm_steps: SFT warm-start steps (default: the prepared cache's, else demo.prepare's).
        val_sets: validate on several sets, label -> file in each seed's data folder (e.g. ``{"mmau":
            "test-mini.json", "shift": "test-shifted.json"}``); the config's monitor label (``mmau``) among them.
        shift: the paper's claim in miniature: ``val_sets`` defaults to :data:`SHIFT_SETS` (test-mini and the
            shifted set) and ``arms`` to :data:`SHIFT_ARMS`; the tables add each set, the kinds of shift and the
            arms head to head.
        arms_file: a YAML file of more arms, ``name: {label, trainer, overrides, configs, labels, with_audio,
            stages, style, warm}`` (:class:`Arm`), then named in ``arms``.
        dry_run: print the commands only.
    """
    from r1aqa_pl.recipes.demo import prepare

    out_p = Path(out).resolve()  # the runs' cwd is the repository
    seeds = list(seeds) if seeds else None
    if seeds and len(seeds) > 1 and "{seed}" not in demo_dir:
        demo_dir = str(out_p / "seed{seed}" / "demo")
    if shift:
        arms, val_sets = arms or list(SHIFT_ARMS), val_sets or dict(SHIFT_SETS)
    specs = load_arms(arms_file)
    sizes = {"n_train": n_train, "n_test": n_test, "warm_steps": warm_steps}
    results: dict = {"seeds": {}, "target": TARGET, "jobs": jobs}
    plans, jobs_list = {}, []
    for seed in seeds or [None]:
        d = Path(demo_dir.format(seed=seed)).resolve()
        stamp = d / "prepared.json"
        recipe = json.loads(stamp.read_text()) if stamp.is_file() else {}  # an existing cache is reused as it is
        seed = recipe.get("seed", 0) if seed is None else seed
        seed_out = out_p / f"seed{seed}"
        labels = d / "data" / "train.audio_contribution.jsonl"
        p = plan(seed_out, d, steps, eval_every, grpo_config, sft_config, arms, seed=seed, labels=labels,
                 val_sets=val_sets, specs=specs)
        if dry_run:
            for name, r in p["runs"].items():
                for k, cmd in enumerate(r["command"] if "stages" in r else [r["command"]]):
                    stage = f" (stage {k + 1}: {r['stages'][k]['arm']})" if "stages" in r else ""
                    print(f"# seed {seed}: {name}{stage}\n" + " ".join(cmd))
            results["seeds"][seed] = p
            continue
        # the cache's recipe as prepare takes it (its stamp also records what it derives: synth_version)
        kept = {k: v for k, v in recipe.items() if k in inspect.signature(prepare).parameters}
        warms = sorted({specs[st].warm for name in p["runs"] for st in (specs[name].stages or [name])})
        for w in warms:  # the plain warm start first: it builds the data and tiny policy the think one reuses
            prepare(out=str(d), **{**kept, "seed": seed, **{k: v for k, v in sizes.items() if v is not None},
                                   **WARM_FOLDERS[w]})
        for label, f in (val_sets or {}).items():
            if not (d / "data" / f).is_file():
                raise FileNotFoundError(f"validation set {label!r}: {d / 'data' / f} not found (an older cache?)")
        (seed_out / "logs").mkdir(parents=True, exist_ok=True)
        label_job = f"seed {seed} labels"
        wait_labels = not labels.exists()
        needs_labels = {name for name, r in p["runs"].items()
                        if any(specs[st].labels for st in (specs[name].stages or [name]))}
        if needs_labels and wait_labels:  # computed once per cache, first in the queue
            jobs_list.insert(0, (label_job, _labels_job(d, seed), seed_out / "logs" / "labels.log", None))
        p["warm_sha256"] = {w: _weights_hash(d / w) for w in warms}
        p["chance"] = chance(d / "data" / "test-mini.json")
        if val_sets:
            p["chance_sets"] = {label: chance(d / "data" / f) for label, f in val_sets.items()}
        for name, r in p["runs"].items():
            after = label_job if name in needs_labels and wait_labels else None
            for st in r.get("stages") or [r]:
                log_name = Path(st["log_dir"]).parent.name
                shutil.rmtree(seed_out / log_name, ignore_errors=True)  # a rerun must not mix with old events
                job = f"seed {seed} {log_name}"
                jobs_list.append((job, st, seed_out / "logs" / f"{log_name}.log", after))
                after = job  # a stage starts from the weights the one before wrote
        plans[seed] = (p, d)
        results["seeds"][seed] = p
    if dry_run:
        return results
    t_all = time.time()
    _run_all(jobs_list, max(1, jobs))
    results["wall_s"] = time.time() - t_all
    out_p.mkdir(parents=True, exist_ok=True)
    md = []
    for seed, (p, d) in plans.items():
        changed = [w for w, h in p["warm_sha256"].items() if _weights_hash(d / w) != h]
        if changed:
            raise RuntimeError(
                f"{d}/{changed[0]} changed during the comparison (rebuilt by another process?): "
                "the runs no longer share their start; run again"
            )
        for r in p["runs"].values():
            if "stages" in r:
                r["wall_s"] = sum(st["wall_s"] for st in r["stages"])
                r["returncode"] = max(st["returncode"] for st in r["stages"])
            r.update(run_summary(r, list(val_sets or [])))
        md.append(f"### seed {seed}\n\n" + table(p) + "\n")
        fig = plot_comparison(p, title=f"seed {seed}: synthetic set, {p['steps']} steps")
        fig.savefig(out_p / f"compare_seed{seed}.png", dpi=110)
    p = next(iter(plans.values()))[0]
    note = (
        f"Prompts seen = optimizer steps × prompts per step (GRPO: {p['grpo_batch_size']} prompts × "
        f"{p['gradient_accumulation_steps']} accumulation, each with G={p['G']} completions; SFT: the same "
        f"prompts, one right answer each). Accuracy on each seed's synthetic test-mini.json, start = step 0 "
        f"(before training), end = step {p['steps']}. {len(jobs_list)} jobs, {max(1, jobs)} side by side; total "
        f"wall time {results['wall_s']:.0f} s.\n"
    )
    text = "\n".join(md)
    if val_sets:
        parts = [f"### every set, over seeds {list(plans)} (mean ± sd [min–max])\n\n" + sets_table(results)]
        parts += ["### arms head to head: end total, first minus second, per seed\n\n" + head_to_head(results)]
        for label in val_sets:
            if any(label in (r.get("shifts") or {}) for p_, _ in plans.values() for r in p_["runs"].values()):
                parts.append(f"### {label}: end accuracy per kind of shift (mean ± sd [min–max])\n\n"
                             + shift_table(results, label))
        text = "\n\n".join(parts) + "\n\n" + text
    if len(plans) > 1:
        text = f"### over seeds {list(plans)} (mean ± sd [min–max])\n\n" + seeds_table(results) + "\n\n" + text
    (out_p / "compare.json").write_text(json.dumps(results, indent=1))
    (out_p / "compare.md").write_text(text + "\n" + note)
    print("\n" + text + "\n" + note)
    print(f"[compare] wrote {out_p / 'compare.json'}, {out_p / 'compare.md'}, {out_p}/compare_seed*.png")
    return results


def main(argv: list[str] | None = None) -> None:
    from jsonargparse import auto_cli

    auto_cli(compare, args=argv)


if __name__ == "__main__":
    main()
