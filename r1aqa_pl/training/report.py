"""What a run tells the person watching it: progress in optimizer steps, and a summary at the end.

Lightning's bar counts batches per epoch; a GRPO run is bounded by ``max_steps`` optimizer steps
(and under gradient accumulation or dynamic sampling a step spans several batches), so its bar
read "Epoch 26/-2". :class:`StepProgressBar` counts optimizer steps out of ``max_steps`` over the
whole run. :class:`RunSummary` prints, when training ends, the validation accuracy per domain at
the start, at its best and at the end, the best checkpoint and the commands to look further,
and writes the same as ``summary.json`` in the logger's folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import _update_n


class StepProgressBar(TQDMProgressBar):
    """One bar for the whole run: optimizer steps out of ``trainer.max_steps``."""

    def on_train_epoch_start(self, trainer, *_) -> None:
        bar = self.train_progress_bar
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        if bar.total != total:
            bar.reset(total=total)
            bar.initial = 0
        _update_n(bar, trainer.global_step)
        bar.set_description(f"optimizer step (epoch {trainer.current_epoch})")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        n = trainer.global_step
        if self.train_progress_bar is not None and self._should_update(n, self.train_progress_bar.total):
            _update_n(self.train_progress_bar, n)
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))


def summary_table(curve: dict[int, dict[str, float]]) -> tuple[list[str], dict]:
    """Lines of the start / best / end table per domain (best: the step with the highest total)."""
    steps = sorted(curve)
    start, end = steps[0], steps[-1]
    best = max(steps, key=lambda s: (curve[s].get("total", 0.0), -s))
    domains = sorted({d for s in steps for d in curve[s]} - {"total"}) + ["total"]
    w = max(8, *(len(d) + 1 for d in domains))
    lines = [f"  {'':<{w}}{f'start (step {start})':>18}{f'best (step {best})':>18}{f'end (step {end})':>18}"]
    for d in domains:
        cells = [f"{curve[s][d]:.3f}" if d in curve[s] else "-" for s in (start, best, end)]
        lines.append(f"  {d:<{w}}" + "".join(f"{c:>18}" for c in cells))
    return lines, {"start": start, "best": best, "end": end}


class RunSummary(L.Callback):
    """Validation accuracy per domain at start / best / end, the best checkpoint, next commands.

    Args:
        metric_prefix: the logged accuracies' prefix; the names right under it (domains, difficulties, total) show.
        also: further names under the prefix to show, e.g. ``sub/louder clip`` (one sub-category).
    """

    def __init__(self, metric_prefix: str = "val/acc/", also: list[str] | None = None):
        self.prefix, self.also = metric_prefix, set(also or [])
        self.curve: dict[int, dict[str, float]] = {}
        self._t0 = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self._t0 = time.time()

    def on_validation_end(self, trainer, pl_module) -> None:
        # the sanity pass logged as step 0 goes straight to the loggers: the benchmark callback keeps it
        values = dict(trainer.callback_metrics)
        for cb in trainer.callbacks:
            values.update(getattr(cb, "last_logged", None) or {})
        accs = {k[len(self.prefix):]: float(v) for k, v in values.items()
                if k.startswith(self.prefix) and ("/" not in k[len(self.prefix):]  # domains, difficulties, total
                                                  or k[len(self.prefix):] in self.also)}
        if accs:
            self.curve[trainer.global_step] = accs

    def on_fit_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or not self.curve:
            return
        lines, at = summary_table(self.curve)
        ckpt = getattr(trainer.checkpoint_callback, "best_model_path", "") or ""
        dm = getattr(trainer, "datamodule", None)
        val_file = getattr(dm, "hparams", {}).get("val_file", "") if dm is not None else ""
        sets = dict(val_file) if isinstance(val_file, dict) else {"": val_file}  # {label: file}
        monitor = next((cb.monitor for cb in trainer.callbacks if type(cb).__name__ == "BenchmarkEvaluation"
                        and cb.monitor in sets), next(iter(sets)))
        seconds = time.time() - self._t0 if self._t0 else 0.0
        text = [(f"\n[summary] {trainer.global_step} optimizer steps in {seconds / 60:.1f} min; "
                 f"validation accuracy on {sets[monitor]}:"), *lines,
                f"  best checkpoint: {ckpt or '(none saved)'}",
                "  next: make tensorboard                       # the curves per domain"]
        for label, file in sets.items():  # one scoring command per validation set, each with its benchmark
            bench = f" BENCH={label}" if label else ""
            text.append(f"        make eval CKPT={ckpt or 'path/to.ckpt'}{bench} DATA={file}")
        print("\n".join(text), flush=True)
        if trainer.log_dir:
            Path(trainer.log_dir).mkdir(parents=True, exist_ok=True)
            (Path(trainer.log_dir) / "summary.json").write_text(json.dumps(
                {"steps": trainer.global_step, "seconds": round(seconds, 1), "best_checkpoint": ckpt,
                 "val_file": val_file, **at, "curve": {str(s): v for s, v in sorted(self.curve.items())}}, indent=1))
