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
  often (``FILTER_WEIGHTS``).

The last two read ``r1aqa audio-contribution`` labels of the training set from the warm start, computed
once per seed as the first jobs. Each seed has its own cache (data, tiny policy, warm start:
``demo.prepare(seed=N)``) and drives its runs (``--seed_everything N``); all of a seed's runs start from
the same warm weights (checked by hash) and are validated on the same test set, before training (step 0)
and every ``eval_every`` steps. ``--jobs 2`` runs two at a time with one thread each.

**Samples seen = prompts seen.** A GRPO optimizer step sees ``batch_size × gradient_accumulation_steps``
prompts, each with G sampled completions; an SFT step sees ``batch_size`` prompts, each with its one
right answer. SFT gets ``batch_size = GRPO batch_size × gradient_accumulation_steps`` and the same number
of optimizer steps, so both see the same prompts (the same seeded order: same data seed and batch size).
GRPO scores G times as many completions; SFT is told the answer, GRPO only whether it was right.

Writes ``<out>/compare.json`` (per seed and run: command, wall time, prompts seen, per-domain accuracy at
start and end, best, steps to reach ``TARGET``, the curves), ``<out>/compare.md`` (over several seeds a
table of means and spreads, then one table per seed) and ``<out>/compare_seed<N>.png`` (the curves, one
panel per domain). In a notebook::

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

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from r1aqa_pl.benchmarks.mmau import DOMAINS

ROOT = Path.cwd()  # runs read configs/ and write checkpoints/ relative to the checkout they start in

COLUMNS = (*DOMAINS, "total")
ACC = {c: f"val/acc/{c}" for c in COLUMNS}
ARMS = {
    "grpo": "GRPO (audio)",
    "sft": "SFT (audio)",
    "grpo_noaudio": "GRPO (no audio)",
    "grpo_ds": "GRPO + dynamic sampling",
    "grpo_curriculum": "GRPO + curriculum",
    "grpo_filtered": "GRPO + audio-contribution weights",
}
DEFAULT_ARMS = ("grpo", "sft", "grpo_noaudio")           # make compare
RECIPE_ARMS = ("grpo", "grpo_ds", "grpo_curriculum", "grpo_filtered")  # make compare-recipes
# the filtered arm: questions the starting policy answers as well without the audio are seen a quarter as often
FILTER_WEIGHTS = {"answerable_without_audio": 0.25}
TARGET = 0.75  # "steps to reach": the first validated step with total accuracy >= TARGET
_STYLE = {"grpo": ("tab:blue", "-"), "sft": ("tab:orange", "--"), "grpo_noaudio": ("tab:gray", ":"),
          "grpo_ds": ("tab:green", "-"), "grpo_curriculum": ("tab:purple", "-."), "grpo_filtered": ("tab:red", "--")}


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
         arms: list[str] | None = None, seed: int = 0, labels: str | Path | None = None) -> dict:
    """The runs of one seed: config, CLI overrides, log folder, and the accounting of prompts seen.

    ``steps`` defaults to the GRPO config's ``trainer.max_steps``; ``eval_every`` (optimizer steps) to its
    ``val_check_interval`` (batches) divided by gradient accumulation, lowered to a divisor of ``steps``
    so that the last step is validated (:func:`eval_interval`). ``labels`` is the audio-contribution file
    of the training set (needed by ``grpo_curriculum`` and ``grpo_filtered``).
    """
    import yaml

    grpo_config, sft_config = Path(grpo_config), Path(sft_config)
    cfg = yaml.safe_load((ROOT / grpo_config if not grpo_config.is_absolute() else grpo_config).read_text())
    model, data, trainer = _init_args(cfg, "model"), _init_args(cfg, "data"), cfg.get("trainer") or {}
    accum = int((model.get("optimization") or {}).get("gradient_accumulation_steps", 1))
    batch = int(data.get("batch_size", 1))
    G = int((model.get("sampling") or {}).get("G", 8))
    steps = int(steps or trainer.get("max_steps") or 100)
    vci = trainer.get("val_check_interval") or 25
    every = int(eval_every or max(1, int(vci) // accum))
    every = eval_interval(steps, every)
    out, demo_dir = Path(out), Path(demo_dir)
    warm, data_dir = demo_dir / "warm", demo_dir / "data"
    prompts = steps * batch * accum
    chosen = list(arms or DEFAULT_ARMS)
    unknown = sorted(set(chosen) - set(ARMS))
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown}; known: {list(ARMS)}")
    if {"grpo_curriculum", "grpo_filtered"} & set(chosen) and not labels:
        raise ValueError("grpo_curriculum and grpo_filtered need the training set's audio-contribution labels")

    def common(name: str, batches_per_step: int) -> list[str]:
        return [
            "--seed_everything", str(seed),
            "--data.init_args.seed", str(seed),
            "--model.init_args.policy.model_name_or_path", str(warm),
            "--data.init_args.train_file", str(data_dir / "train.jsonl"),
            "--data.init_args.val_file", str(data_dir / "test-mini.json"),
            "--trainer.max_steps", str(steps),
            "--trainer.val_check_interval", str(every * batches_per_step),
            "--trainer.check_val_every_n_epoch", "null",
            "--trainer.num_sanity_val_steps", "-1",
            "--trainer.default_root_dir", str(out / name),
            "--trainer.logger.init_args.save_dir", str(out),
            "--trainer.logger.init_args.name", name,
            "--trainer.logger.init_args.version", "0",
            "--trainer.enable_progress_bar", "false",
        ]

    grpo = {"configs": [str(grpo_config)], "prompts_seen": prompts, "completions_seen": prompts * G,
            "batch_size": batch, "with_audio": True}
    selection = ["--data.init_args.audio_contribution", str(labels)]
    extra = {
        "grpo": [],
        "grpo_noaudio": [
            "--model.init_args.policy.with_audio",
            "false",
        ],  # the data's with_audio follows the model's (linked)
        # a step's batch may take more than one batch of prompts: validate on the same optimizer steps anyway
        "grpo_ds": ["--model.init_args.selection.dynamic_sampling", "true"],
        "grpo_curriculum": [*selection, "--data.init_args.curriculum_epochs", "1"],
        "grpo_filtered": [*selection, "--data.init_args.label_weights", json.dumps(FILTER_WEIGHTS)],
    }
    runs = {
        name: {**grpo, "overrides": common(name, accum) + args, "with_audio": name != "grpo_noaudio"}
        for name, args in extra.items()
    }
    runs["sft"] = {
        "configs": [str(grpo_config), str(sft_config)],  # the SFT overlay on the GRPO config
        "overrides": common("sft", 1) + ["--data.init_args.batch_size", str(batch * accum)],
        "prompts_seen": prompts,
        "completions_seen": prompts,
        "batch_size": batch * accum,
        "with_audio": True,
    }
    for name in chosen:
        configs = [a for c in runs[name]["configs"] for a in ("--config", c)]
        runs[name]["command"] = [sys.executable, "-m", "r1aqa_pl", "fit", *configs, *runs[name]["overrides"]]
        runs[name]["log_dir"] = str(out / name / "version_0")
    return {
        "steps": steps,
        "eval_every": every,
        "G": G,
        "gradient_accumulation_steps": accum,
        "grpo_batch_size": batch,
        "demo_dir": str(demo_dir),
        "out": str(out),
        "seed": seed,
        "runs": {name: runs[name] for name in chosen},
    }


# ---------------------------------------------------------------- results


def summarize(scalars: dict[str, list[tuple[int, float]]]) -> dict:
    """Per-domain accuracy at the first and last validation, the best total, and the curves (x: optimizer
    steps, as the modules and BenchmarkEvaluation log them)."""
    curves = {c: [[int(s), float(v)] for s, v in scalars.get(tag, [])] for c, tag in ACC.items()}
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


def table(results: dict) -> str:
    """Markdown table: one row per run, each domain as ``start → end`` accuracy in %."""
    head = ["run", "steps", "prompts seen", *(f"{c} (%)" for c in COLUMNS), "wall (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for name, r in results["runs"].items():
        cells = [
            ARMS.get(name, name),
            str(r.get("end_step", results.get("steps", "?"))),
            str(r.get("prompts_seen", "?")),
        ]
        cells += [f"{_pct(r['start'].get(c))} → {_pct(r['end'].get(c))}" for c in COLUMNS]
        wall = r.get("wall_s")
        cells.append("–" if wall is None else f"{wall:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    if results.get("chance"):
        cells = ["chance (uniform guess)", "", "", *(_pct(results["chance"].get(c)) for c in COLUMNS), ""]
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
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for arm in arms:
        rs = [seeds[k]["runs"][arm] for k in seeds]

        def pct(get, rs=rs):
            return [None if get(r) is None else 100 * get(r) for r in rs]

        reached = [r.get("steps_to_target") for r in rs]
        lines.append(
            "| "
            + " | ".join(
                [
                    ARMS.get(arm, arm),
                    _spread(pct(lambda r: r["start"]["total"])),
                    _spread(pct(lambda r: r["end"]["total"])),
                    _spread(pct(lambda r: (r.get("best_total") or {}).get("acc"))),
                    f"{sum(x is not None for x in reached)}/{len(rs)}",
                    _spread(reached, 0),
                    _spread([r.get("wall_s") for r in rs], 0),
                ]
            )
            + " |"
        )
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
            color, ls = _STYLE.get(name, ("black", "-"))
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
        arms: any of grpo, sft, grpo_noaudio, grpo_ds, grpo_curriculum, grpo_filtered (default: the first three).
        seeds: one seed drives each seed's data, tiny policy, warm start and runs (default: the cache's, else 0).
        jobs: runs side by side (each with cpu_count / jobs threads; 2 on 2 cores nearly halves the time).
        grpo_config: the GRPO config (all GRPO arms).
        sft_config: the SFT overlay, applied on top of ``grpo_config`` (run ``sft``).
        n_train: synthetic training questions (default: the prepared cache's, else demo.prepare's).
        n_test: synthetic test questions (default: the prepared cache's, else demo.prepare's).
        warm_steps: SFT warm-start steps (default: the prepared cache's, else demo.prepare's).
        dry_run: print the commands only.
    """
    from r1aqa_pl.eval import runs
    from r1aqa_pl.recipes.demo import prepare

    out_p = Path(out).resolve()  # the runs' cwd is the repository
    seeds = list(seeds) if seeds else None
    if seeds and len(seeds) > 1 and "{seed}" not in demo_dir:
        demo_dir = str(out_p / "seed{seed}" / "demo")
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
        p = plan(seed_out, d, steps, eval_every, grpo_config, sft_config, arms, seed=seed, labels=labels)
        if dry_run:
            for name, r in p["runs"].items():
                print(f"# seed {seed}: {name}\n" + " ".join(r["command"]))
            results["seeds"][seed] = p
            continue
        prepare(out=str(d), **{**recipe, "seed": seed, **{k: v for k, v in sizes.items() if v is not None}})
        (seed_out / "logs").mkdir(parents=True, exist_ok=True)
        needs_labels = {"grpo_curriculum", "grpo_filtered"} & set(p["runs"])
        label_job = f"seed {seed} labels"
        if needs_labels and not labels.exists():  # computed once per cache, first in the queue
            jobs_list.insert(0, (label_job, _labels_job(d, seed), seed_out / "logs" / "labels.log", None))
        p["warm_sha256"] = _weights_hash(d / "warm")
        p["chance"] = chance(d / "data" / "test-mini.json")
        for name, r in p["runs"].items():
            shutil.rmtree(seed_out / name, ignore_errors=True)  # a rerun must not mix with old events
            after = label_job if name in needs_labels and not labels.exists() else None
            jobs_list.append((f"seed {seed} {name}", r, seed_out / "logs" / f"{name}.log", after))
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
        if _weights_hash(d / "warm") != p["warm_sha256"]:
            raise RuntimeError(
                f"{d}/warm changed during the comparison (rebuilt by another process?): "
                "the runs no longer share their start; run again"
            )
        for r in p["runs"].values():
            r.update(summarize(runs.load_scalars(r["log_dir"], version=r["log_dir"])))
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
