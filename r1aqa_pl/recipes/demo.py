"""Everything the CPU demo needs before ``lightning fit --config configs/demo.yaml``.

1. the synthetic 3-domain audio-QA set (AVQA-format train, MMAU-format test-mini, MMAR-format mixes);
2. a tiny random policy of the chosen family whose word-level vocabulary covers that set;
3. a brief seeded SFT warm start on correct answers *from the question text alone*, saved as a Hugging
   Face folder.

GRPO from a random policy never sees a reward (it cannot write the format). A warm start without the
audio teaches the format and the choices but cannot beat chance (answers are balanced within every
sub-task), so every seed starts GRPO near chance and all of the gain is the policy learning to listen.
(Warm-starting *with* the audio let some seeds learn part of the task already: step-0 accuracy 0.58
to 0.69 across seeds.) The tiny model is initialised at ``init_std`` = 1/sqrt(width): at the hub's 0.02
a 64-wide model hears the audio so faintly that it sat at chance for ~400 GRPO steps. Each stage is
cached under ``out`` and rebuilt when missing or when ``prepared.json`` records another recipe (seed...).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)
DEFAULT_FAMILY = "qwen2_audio"  # its tiny policy and warm start keep the plain names (configs/demo.yaml's warm/)


def prepare(
    out: str = "checkpoints/demo",
    family: str = DEFAULT_FAMILY,
    seed: int = 0,
    n_train: int = 600,
    n_test: int = 150,
    warm_steps: int = 150,
    warm_lr: float = 3e-3,
    warm_batch_size: int = 8,
    warm_audio: bool = False,
    init_std: float | None = 0.125,
    n_mels: int = 32,
    think: bool = False,
    force: bool = False,
) -> str:
    """Build (or reuse) the demo's data, tiny policy and warm start under ``out``; returns the warm folder:
    ``warm/`` for Qwen2-Audio (configs/demo.yaml's), ``warm-<family>/`` for another family (with its ``tiny-<family>/``
    and ``prepared-<family>.json``), so that one family's demo never replaces another's warm start.

    Args:
        out: cache folder (ignored by git).
        family: the policy family of the tiny model (see ``r1aqa_pl.models.FAMILIES``).
        seed: seeds the data, the tiny model and the warm start (``make demo SEED=N`` passes the same
            seed to the GRPO run).
        n_train: synthetic training questions.
        n_test: synthetic MMAU-format test-mini questions.
        warm_steps: SFT steps on correct answers before GRPO (text only unless ``warm_audio``).
        warm_lr: SFT learning rate.
        warm_batch_size: SFT prompts per step.
        warm_audio: warm-start with the audio in the prompt (False: on the question text alone).
        init_std: the tiny model's initial weight scale (see ``r1aqa_pl.models.tiny.save_tiny``).
        n_mels: the tiny model's mel bins.
        think: the warm start thinks before it answers (the think prompt and ``THINK_SFT_TARGETS``: the options,
            the question or both restated in ``<think>``, drawn per question), in its own ``warm-think/`` beside
            ``warm/``: the start of a think-mode run whose length reward has thoughts of several lengths to shape
            (one length only gave every completion of a group the same penalty: no advantage, no gradient). It
            hears another question's clips (:func:`foreign_audio`): trained on the text alone, its thought fell
            apart once GRPO put audio in the prompt (seed 0, 8 prompts × 4 samples at temperature 1: the think
            format in 1 of 32 completions with the audio, 31 of 32 without; on foreign clips, 32 of 32).
        force: rebuild every stage.
    """
    import lightning as L

    from r1aqa_pl.data.datamodule import AudioQADataModule
    from r1aqa_pl.data.synth import VERSION, synth, synth_vocabulary
    from r1aqa_pl.models import FAMILIES, build_tiny_model
    from r1aqa_pl.task import answer_format
    from r1aqa_pl.training.report import StepProgressBar
    from r1aqa_pl.training.sft_module import SFTModule

    root = Path(out)
    # one tiny policy and warm start per family: another family's demo never rebuilds the folder that
    # earlier checkpoints were trained from (and are rebuilt from by `r1aqa eval`)
    suffix = "" if family == DEFAULT_FAMILY else f"-{family}"
    data, tiny = root / "data", root / f"tiny{suffix}"
    warm = root / f"warm{'-think' if think else ''}{suffix}"
    recipe = {
        "family": family,
        "synth_version": VERSION,
        "seed": seed,
        "n_train": n_train,
        "n_test": n_test,
        "warm_steps": warm_steps,
        "warm_lr": warm_lr,
        "warm_batch_size": warm_batch_size,
        "warm_audio": warm_audio,
        "init_std": init_std,
        "n_mels": n_mels,
    }
    stamp = root / f"prepared{suffix}.json"
    if not stamp.exists() or json.loads(stamp.read_text()) != recipe:  # a cache of another seed or recipe
        force = True
    data_recipe = {"seed": seed, "n_train": n_train, "n_test": n_test, "version": VERSION}
    data_stamp = data / "synth.json"
    if (force or not (data / "test-mini.json").exists() or not (data / "mmar.jsonl").exists()
            or not data_stamp.exists() or json.loads(data_stamp.read_text()) != data_recipe):
        print(f"[demo] synthetic data -> {data}")
        synth(str(data), n_train=n_train, n_test=n_test, seed=seed)
        data_stamp.write_text(json.dumps(data_recipe))
    built = json.loads((tiny / "tiny.json").read_text()).get("family") if (tiny / "tiny.json").exists() else None
    if force or built != family:  # a cache of another family is rebuilt, with its warm start
        print(f"[demo] tiny {family} -> {tiny}")
        build_tiny_model(
            str(tiny), family=family, words=synth_vocabulary(), seed=seed, init_std=init_std, n_mels=n_mels
        )
        force = True
    # each warm folder records what it was trained from: the plain and the think one are rebuilt independently
    foreign = think and not warm_audio
    warm_recipe = {**recipe, "think": think, "warm_clips": "foreign" if foreign else "own" if warm_audio else "none",
                   **({"thoughts": list(answer_format.THINK_SFT_TARGETS)} if think else {})}
    warm_stamp = warm / "prepared.json"
    if (force or not (warm / "config.json").exists() or not warm_stamp.exists()
            or json.loads(warm_stamp.read_text()) != warm_recipe):
        print(f"[demo] SFT warm start ({warm_steps} steps{', thinking' if think else ''}) -> {warm}")
        L.seed_everything(seed, workers=True)
        dm = AudioQADataModule(
            train_file=str(data / "train.jsonl"),
            feature_extractor=str(tiny),
            batch_size=warm_batch_size,
            seed=seed,
            with_audio=warm_audio or think,
            max_clips=FAMILIES.build(family).max_clips,  # Audio Flamingo 3: the two-clip questions left out
        )
        module = (with_foreign_audio(SFTModule) if foreign else SFTModule)(
            dict(model_name_or_path=str(tiny), with_audio=warm_audio or think, think=think),
            optimization=dict(lr=warm_lr, warmup_steps=0),
            target=list(answer_format.THINK_SFT_TARGETS) if think else answer_format.SFT_TARGET,
        )
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            max_steps=warm_steps,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            deterministic=True,
            gradient_clip_val=1.0,
            default_root_dir=str(root),
            callbacks=[StepProgressBar()],
        )
        trainer.fit(module, dm)
        module.export_hf(str(warm))
        warm_stamp.write_text(json.dumps(warm_recipe))
    stamp.write_text(json.dumps(recipe))
    return str(warm)


def foreign_audio(audio: list) -> list:
    """Each item of a batch gets the clips of the next item with as many clips (cyclically), silence of its own
    clips' shape when it has no such partner: audio in the prompt that says nothing about the item's answer."""
    import numpy as np

    from r1aqa_pl.models.base import clips_of

    def arity(a):
        return len(clips_of(a))

    out = []
    for i, a in enumerate(audio):
        n = len(audio)
        j = next((k % n for k in range(i + 1, i + n) if arity(audio[k % n]) == arity(a)), None)
        out.append(audio[j] if j is not None else
                   [np.zeros_like(c) for c in a] if isinstance(a, list) else np.zeros_like(a))
    return out


def with_foreign_audio(sft_class):
    """``sft_class`` trained on another question's clips (:func:`foreign_audio`): the format learnt with audio in the
    prompt, as GRPO will see it, and nothing about the answers (the warm start must leave GRPO at chance)."""

    class ForeignAudioSFT(sft_class):
        def training_step(self, batch, batch_idx):
            return super().training_step({**batch, "audio": foreign_audio(batch["audio"])}, batch_idx)

    return ForeignAudioSFT
