"""Reading a training run back: TensorBoard scalars, prediction files, and the figures of
``notebooks/results.ipynb`` (accuracy per domain over steps, reward and KL, accuracy per sub-category).

The notebook only calls these functions, so what it shows is tested without a notebook server.
Figures are plain :class:`matplotlib.figure.Figure` objects (no pyplot state): a notebook displays
them, :func:`save_figures` writes PNGs.
"""

from __future__ import annotations

import re
from pathlib import Path

from r1aqa_pl.benchmarks import get
from r1aqa_pl.benchmarks.mmau import DOMAINS
from r1aqa_pl.task.files import read_records

Scalars = dict[str, list[tuple[int, float]]]
ACC_TAGS = tuple(f"val/acc/{d}" for d in (*DOMAINS, "total"))
TRAIN_TAGS = ("train/reward", "train/kl")
_COLORS = {"sound": "tab:blue", "music": "tab:orange", "speech": "tab:green", "total": "black"}


# ---------------------------------------------------------------- reading

def event_dirs(run_dir: str | Path) -> list[Path]:
    """Folders under ``run_dir`` (itself included) that hold TensorBoard event files, oldest first."""
    root = Path(run_dir)
    if not root.exists():
        raise FileNotFoundError(f"{root}: run folder not found")
    dirs = {p.parent for p in root.rglob("events.out.tfevents.*")}
    return sorted(dirs, key=lambda d: max(f.stat().st_mtime for f in d.glob("events.out.tfevents.*")))


def load_scalars(run_dir: str | Path, version: str | Path | None = None) -> Scalars:
    """Every scalar of a run as ``{tag: [(step, value), ...]}`` sorted by step.

    ``run_dir`` may hold several logger versions (``grpo/version_0``, ``version_1``...): the newest is
    read unless ``version`` names one (a folder, absolute or relative to ``run_dir``). A value logged
    twice at one step (a resumed run) keeps the later one.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if version is not None:
        folder = Path(version) if Path(version).is_absolute() else Path(run_dir) / version
    else:
        dirs = event_dirs(run_dir)
        if not dirs:
            raise FileNotFoundError(f"{run_dir}: no TensorBoard event files (events.out.tfevents.*) found")
        folder = dirs[-1]
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    out: Scalars = {}
    for tag in acc.Tags().get("scalars", []):
        by_step = {int(e.step): float(e.value) for e in acc.Scalars(tag)}
        out[tag] = sorted(by_step.items())
    return out


def prediction_files(run_dir: str | Path, stage: str = "val", label: str | None = None) -> list[Path]:
    """The per-validation prediction files (``predictions/<stage>_step<N>.json``), by step; ``label`` picks
    one set of a run that validated several (``predictions/<label>/...``); without it, a multi-set run's
    ``mmau`` set."""
    name = re.compile(rf"{re.escape(stage)}_step\d+\.jsonl?")

    def find(folder: str | None) -> list[Path]:
        return [p for p in Path(run_dir).rglob(f"{stage}_step*") if name.fullmatch(p.name)
                and (p.parent.name == "predictions" if folder is None
                     else p.parent.name == folder and p.parent.parent.name == "predictions")]

    files = find(label) or ([] if label else find("mmau"))
    return sorted(files, key=lambda p: (file_step(p), p.stat().st_mtime))


def file_step(path: str | Path) -> int:
    """The step in a ``..._step<N>.json`` name (-1 if none)."""
    m = re.search(r"step(\d+)", Path(path).name)
    return int(m[1]) if m else -1


def latest_predictions(run_dir: str | Path, stage: str = "val", label: str | None = None) -> Path | None:
    """The prediction file of the run's last validation (None if it has none)."""
    files = prediction_files(run_dir, stage, label)
    return files[-1] if files else None


def summary(scalars: Scalars) -> str:
    """One line per accuracy / reward / KL tag: number of points, last step and value, best value."""
    lines = []
    for tag in (*ACC_TAGS, *TRAIN_TAGS):
        points = scalars.get(tag)
        if not points:
            lines.append(f"{tag:<18} (not logged)")
            continue
        best = max(points, key=lambda p: p[1])
        lines.append(f"{tag:<18} {len(points):>5} points; last step {points[-1][0]}: {points[-1][1]:.4f}; "
                     f"max {best[1]:.4f} at step {best[0]}")
    return "\n".join(lines)


# ---------------------------------------------------------------- figures

def _figure(rows: int = 1, cols: int = 1, size=(7.0, 4.0)):
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes.ravel()


def _empty(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} logged", ha="center", va="center", transform=ax.transAxes, color="gray")


def plot_domain_accuracy(scalars: Scalars, title: str = "MMAU accuracy per domain"):
    """``val/acc/{sound,music,speech,total}`` in % over optimizer steps; the best total is marked."""
    fig, (ax,) = _figure()
    drawn = False
    for tag in ACC_TAGS:
        points = scalars.get(tag)
        if not points:
            continue
        name = tag.rsplit("/", 1)[1]
        steps, values = zip(*points)
        ax.plot(steps, [100 * v for v in values], marker="o", ms=3, color=_COLORS[name],
                lw=2.2 if name == "total" else 1.4, label=name)
        drawn = True
    total = scalars.get("val/acc/total")
    if total:
        s, v = max(total, key=lambda p: p[1])
        ax.annotate(f"best {100 * v:.1f}% @ {s}", (s, 100 * v), textcoords="offset points", xytext=(4, 6), fontsize=8)
    if drawn:
        ax.legend(loc="best", fontsize=8)
    else:
        _empty(ax, "val/acc")
    ax.set(xlabel="step", ylabel="accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    return fig


def _smooth(values: list[float], weight: float) -> list[float]:
    """TensorBoard's exponential moving average."""
    out, last = [], None
    for v in values:
        last = v if last is None else weight * last + (1 - weight) * v
        out.append(last)
    return out


def plot_training(scalars: Scalars, smoothing: float = 0.6):
    """Reward (total and per domain, when logged) and the KL to the reference policy over steps."""
    fig, (ax_r, ax_k) = _figure(1, 2, size=(11.0, 4.0))
    reward = scalars.get("train/reward")
    if reward:
        steps, values = zip(*reward)
        ax_r.plot(steps, values, color="black", alpha=0.25, lw=1)
        ax_r.plot(steps, _smooth(list(values), smoothing), color="black", lw=2, label="reward")
        for d in DOMAINS:
            pts = scalars.get(f"train/reward/{d}")
            if pts:
                s, v = zip(*pts)
                ax_r.plot(s, _smooth(list(v), smoothing), color=_COLORS[d], lw=1.2, label=d)
        ax_r.legend(loc="best", fontsize=8)
    else:
        _empty(ax_r, "train/reward")
    ax_r.set(xlabel="step", ylabel="reward", title="reward (accuracy + format)")
    kl = scalars.get("train/kl")
    if kl:
        steps, values = zip(*kl)
        ax_k.plot(steps, values, color="tab:red", alpha=0.25, lw=1)
        ax_k.plot(steps, _smooth(list(values), smoothing), color="tab:red", lw=2)
    else:
        _empty(ax_k, "train/kl")
    ax_k.set(xlabel="step", ylabel="KL (k3)", title="KL to the reference policy")
    for ax in (ax_r, ax_k):
        ax.grid(alpha=0.3)
    return fig


def plot_subcategories(result: dict, title: str = "accuracy per sub-category"):
    """Horizontal bars of a :meth:`Benchmark.score_records` result's sub-categories, coloured by domain."""
    subs = result.get("sub-category", {})
    fig, (ax,) = _figure(size=(8.0, max(2.5, 0.32 * len(subs) + 1.2)))
    if not subs:
        _empty(ax, "sub-category")
        return fig
    # the domain of each sub-category is not in the result: the scorer orders them by task, so
    # take it from the records when given, else colour them all alike
    domain = result.get("_sub_domain", {})
    names = list(subs)[::-1]
    accs = [100 * subs[n]["acc"] for n in names]
    colors = [_COLORS.get(domain.get(n, ""), "tab:gray") for n in names]
    ax.barh(names, accs, color=colors)
    for y, n in enumerate(names):
        ax.text(accs[y] + 1, y, f"{subs[n]['correct']}/{subs[n]['total']}", va="center", fontsize=7)
    ax.set(xlim=(0, 110), xlabel="accuracy (%)", title=title)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    return fig


def score_predictions(path: str | Path) -> dict:
    """The MMAU score of a prediction file plus ``_sub_domain`` (sub-category -> task) for
    :func:`plot_subcategories`."""
    mmau = get("mmau")
    records = read_records(path)
    result = mmau.score_records(records, source=str(path))
    result["_sub_domain"] = {
        str(r.get("sub-category") or "other"): str(r.get("task") or "other") for r in records if isinstance(r, dict)
    }
    return result


def save_figures(figures: dict, out_dir: str | Path, dpi: int = 110) -> dict[str, Path]:
    """Write each figure as ``out_dir/<name>.png``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, fig in figures.items():
        paths[name] = out / f"{name}.png"
        fig.savefig(paths[name], dpi=dpi)
    return paths


def report(run_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """All figures of a run, saved as PNGs in ``out_dir`` (default ``<run_dir>/figures``)."""
    scalars = load_scalars(run_dir)
    figures = {"accuracy_domains": plot_domain_accuracy(scalars), "reward_kl": plot_training(scalars)}
    pred = latest_predictions(run_dir)
    if pred is not None:
        figures["accuracy_subcategories"] = plot_subcategories(
            score_predictions(pred), f"accuracy per sub-category ({pred.name})"
        )
    return save_figures(figures, out_dir or Path(run_dir) / "figures")
