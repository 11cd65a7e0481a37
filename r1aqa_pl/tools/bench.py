"""``make bench`` (``r1aqa bench``): the project's GRPO step and evaluation path against a
straightforward reference.

The bench policy (``--family``, default Qwen2-Audio; ``make bench FAMILY=qwen2_5_omni``) is a real
``Qwen2AudioForConditionalGeneration`` (or the family's model class) with the 7B model's sequence
geometry and shrunken widths: 128 mel bins, a 30 s encoder window (3000 frames, 1500 encoder
positions), 10 s clips (250 audio tokens in the prompt), encoder d_model 128 x 4 layers, LM hidden
256 x 4 layers with 8 heads, a 2048-token vocabulary. It is briefly fitted (SFT, AdamW) to answer
``<answer> wK </answer>`` and then keep talking, so that stopping at ``</answer>`` is meaningful.

* **project step** = ``GRPOModule.make_rollout`` + ``GRPOModule.update`` exactly as training runs
  them (G completions per prompt sampled from one prefill whose cache is shared, the audio encoder
  run over the clip rather than the 30 s window, the reference model's log-probs, the policy
  forward/backward with the shared prompt and completion-only logits, one micro-batch of G
  completions per prompt, AdamW step).
* **reference step** = R1-AQA / TRL's way, written out below: ``generate(num_return_sequences=G)``
  (the audio encoder, over the full window, and the prompt run once per completion), then for
  each prompt's G completions ``model(**inputs repeated G times + completions).logits`` over
  every position, log_softmax, gather; the reference model the same way; the same loss; the same
  AdamW step. Like the project (``micro_batch_prompts=1``) it runs one prompt's G completions per
  forward/backward (R1-AQA's per-GPU batch), so the memory comparison is not a micro-batching
  artefact.

Both run in one process, interleaved, with the same models; the optimizer has lr 0 so the weights
stay put and every repetition does the same work. Memory is the peak resident set size during a
step above the resident size just before it (see :class:`PeakRSS`).
"""

from __future__ import annotations

import os
import sys

# Waiting OpenMP threads sleep instead of spinning. On a loaded machine (load average above the
# core count) spinning threads burn the cores the descheduled ones need and every parallel operator
# stalls for a scheduler time slice: wall times become noise (measured here: the same step 2.5 s vs
# 12 s). It only takes effect before torch loads its OpenMP runtime (`r1aqa bench`, whose process
# loads torch here); export OMP_WAIT_POLICY to override.

if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import copy  # noqa: E402
import ctypes  # noqa: E402
import gc  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from r1aqa_pl.algo.advantages import group_advantages  # noqa: E402
from r1aqa_pl.algo.logprobs import completion_logprobs, completion_mask  # noqa: E402
from r1aqa_pl.algo.rewards import score_completions  # noqa: E402
from r1aqa_pl.models.base import PolicyFamily  # noqa: E402
from r1aqa_pl.models.qwen2_audio import Qwen2Audio  # noqa: E402
from r1aqa_pl.rollout import Rollout  # noqa: E402

GEOMETRY = dict(window_seconds=30, n_mels=128, hidden_size=256, num_layers=4, num_heads=8,
                encoder_dim=128, encoder_layers=4)
VOCAB = 2048
CLIP_SECONDS = 10
G = 8
NEW_TOKENS = 16
EVAL_NEW_TOKENS = 256
BETA = 0.04
# what the fitted bench policy says after its answer (no EOS): the case stopping at </answer> is for
AFTER_ANSWER = " ".join(f"w{i}" for i in range(100, 124))
DEVICE = torch.device("cpu")  # --device


# ------------------------------------------------------------------ memory


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakRSS:
    """Peak resident memory (MiB) of a block above the resident memory at its start (Linux).

    PyTorch's CPU allocator hands tensors straight to malloc (no caching), so the process's
    resident set is what the tensors occupy. Before the block: ``gc.collect()``, ``malloc_trim(0)``
    (returns freed heap pages, so that reusing them counts again) and writing ``5`` to
    ``/proc/self/clear_refs``, which resets the kernel's high-water mark VmHWM to the current
    VmRSS; after it, VmHWM - VmRSS(before) is the step's peak. Unlike tracemalloc it sees torch's
    allocations; unlike ``ru_maxrss`` it can be reset, so both variants are measured in the same
    process, every repetition. ``nan`` where /proc/self/clear_refs is not writable.
    """

    def __enter__(self):
        gc.collect()
        _malloc_trim()
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.ok = True
        except OSError:
            self.ok = False
        self.base = _status_kb("VmRSS")
        return self

    def __exit__(self, *exc):
        self.mib = (_status_kb("VmHWM") - self.base) / 1024 if self.ok else math.nan
        return False


# ------------------------------------------------------------------ the bench policy


def vocabulary_words(vocab: int = VOCAB) -> list[str]:
    """Synthetic words ``w0 w1 ...`` that bring the tiny tokenizer to exactly ``vocab`` tokens."""
    from r1aqa_pl.models.tiny import QWEN2_AUDIO_SPECIAL, vocabulary

    base = len(vocabulary(QWEN2_AUDIO_SPECIAL))
    return [f"w{i}" for i in range(vocab - base)]


def questions(n: int, seed: int):
    """MMAU-style items: questions of 6-24 words (so prompts need left padding), 4 choices, 10 s clips."""
    from r1aqa_pl.task.question import Question

    rng = np.random.default_rng(seed)
    qs, audio, sr = [], [], 16000
    t = np.arange(CLIP_SECONDS * sr) / sr
    for i in range(n):
        words = rng.choice(np.arange(200, 1900), size=int(rng.integers(6, 25)), replace=False)
        choices = [f"w{c}" for c in rng.choice(np.arange(1, 100), size=4, replace=False)]
        qs.append(Question(id=f"b{seed}-{i}", audio_path=None, question=" ".join(f"w{w}" for w in words),
                           choices=choices, answer=choices[int(rng.integers(4))],
                           domain=("sound", "music", "speech")[i % 3]))
        f = rng.uniform(200, 2000)
        audio.append((0.3 * np.sin(2 * np.pi * f * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32))
    return qs, audio


def fit_answer_format(
    model, processor, steps: int, lr: float = 3e-3, seed: int = 0, snapshot_at: int | None = None, family=None
):
    """SFT on four prompts towards ``<answer> {answer} </answer> w100 ... w123`` (no EOS), AdamW.

    The audio encoder is frozen for these steps and its output computed once (the prompts do not
    change), so the fit costs LM passes only. Returns a copy of the model at ``snapshot_at`` steps
    (the frozen GRPO reference: close to, not equal to, the policy, so the KL term is non-zero).
    """
    torch.manual_seed(seed)
    qs, audio = questions(4, seed=1000 + seed)
    family = copy.copy(family or Qwen2Audio())  # this fit's own adapter: its encoder output is cached below
    inputs = family.encode(processor, qs, audio)
    tok = processor.tokenizer
    ids = [tok(f"<answer> {q.answer} </answer> {AFTER_ANSWER}", add_special_tokens=False).input_ids for q in qs]
    target = torch.tensor(ids)  # same length for every row
    mask = torch.ones_like(target)
    if type(family).encode_audio is not PolicyFamily.encode_audio:  # Phi-4 merges the audio in its embedding layer
        with torch.no_grad():  # the encoder stays as built: its output is computed once
            flat = family.model_inputs(inputs)  # AF3: one row per window again
            feats = family.encode_audio(model.model, *(flat[k] for k in family.audio_keys))
        family.encode_audio = lambda *a, **k: feats
    encoder = {id(p) for p in family.audio_encoder(model.model).parameters()}
    params = [p for p in model.parameters() if p.requires_grad and id(p) not in encoder]
    opt = torch.optim.AdamW(params, lr=lr)
    snapshot = None
    model.train()
    for step in range(steps):
        if step == snapshot_at:
            snapshot = copy.deepcopy(model)
        logp = completion_logprobs(family, model, inputs, target, mask, G=1)
        loss = -(logp * mask).sum() / mask.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    if snapshot is None:
        snapshot = copy.deepcopy(model)
    return loss.item(), snapshot.eval()


def build_bench_policy(
    out_dir: str, fit_steps: int = 30, seed: int = 0, family: str = "qwen2_audio", **widths: int
) -> tuple[str, str, dict]:
    """Build, fit and save the bench policy (``out_dir/policy``) and its GRPO reference (``out_dir/ref``);
    ``widths`` (``hidden_size``, ``encoder_dim``) replace :data:`GEOMETRY`'s."""
    from r1aqa_pl.models import build_tiny_model, load_policy

    geometry = {**GEOMETRY, **widths}
    base = build_tiny_model(str(Path(out_dir) / "init"), family=family, words=vocabulary_words(), seed=seed, **geometry)
    model, processor, fam = load_policy(base)
    assert family != "qwen2_audio" or len(processor.tokenizer) == VOCAB, len(processor.tokenizer)
    t0 = time.perf_counter()
    loss, ref = fit_answer_format(model, processor, fit_steps, seed=seed, snapshot_at=max(0, fit_steps - 5), family=fam)
    info = {"fit_loss": loss, "fit_s": time.perf_counter() - t0, "fit_steps": fit_steps, "geometry": geometry}
    paths = []
    for name, m in (("policy", model), ("ref", ref)):
        p = str(Path(out_dir) / name)
        m.save_pretrained(p)
        processor.save_pretrained(p)
        paths.append(p)
    projector = getattr(model.model, "multi_modal_projector", torch.nn.Identity())  # Omni: inside the encoder
    lm = fam.language_model(model.model)
    info["parameters"] = {
        "audio encoder": sum(p.numel() for p in fam.audio_encoder(model.model).parameters()),
        "projector": sum(p.numel() for p in projector.parameters()),
        "LM layers": sum(p.numel() for p in lm.layers.parameters()),
        "embeddings": lm.embed_tokens.weight.numel(),
        "LM head": model.lm_head.weight.numel(),
    }
    return paths[0], paths[1], info


# ------------------------------------------------------------------ the project's step


class Harness:
    """A GRPOModule driven without a Trainer: what Lightning would hand it, nothing else.

    ``optimizers()`` / ``lr_schedulers()`` return a plain AdamW (lr 0: weights never move) and
    its scheduler, ``manual_backward`` is ``loss.backward()``, logged values are kept. With
    ``capture`` set, the gradients are copied right before the optimizer step.
    """

    def __init__(self, policy_dir: str, ref_dir: str):
        from r1aqa_pl.models import load_policy
        from r1aqa_pl.training.grpo_module import GRPOModule

        m = GRPOModule(
            dict(model_name_or_path=policy_dir, share_prompt=True),
            sampling=dict(G=G, temperature=1.0, top_p=1.0, max_new_tokens=NEW_TOKENS),
            optimization=dict(micro_batch_prompts=1, lr=0.0, max_grad_norm=0.0),
            evaluation=dict(max_new_tokens=EVAL_NEW_TOKENS, stop_at_answer=True),
            loss={"class_path": "grpo", "init_args": {"beta": BETA}},
        )
        m.configure_model()
        m.family = copy.copy(m.family)  # this module's own adapter object: the profile wraps its methods
        m.to(DEVICE)
        ref, _, _ = load_policy(ref_dir)
        object.__setattr__(m, "ref_policy", ref.to(DEVICE).eval().requires_grad_(False))
        self.module, self.logged, self.capture, self.grads = m, {}, False, None
        params = [p for p in m.policy.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=0.0)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: 1.0)
        harness = self
        step = self.opt.step

        def capturing_step(*a, **k):
            if harness.capture:
                harness.grads = {
                    n: p.grad.detach().clone() for n, p in m.policy.named_parameters() if p.grad is not None
                }
            return step(*a, **k)

        self.opt.step = capturing_step
        m.optimizers = lambda *a, **k: self.opt
        m.lr_schedulers = lambda *a, **k: self.sched
        m.manual_backward = lambda loss, *a, **k: loss.backward()
        m.log_dict = lambda d, *a, **k: self.logged.update({k_: float(v) for k_, v in d.items()})
        m.log = lambda name, value, *a, **k: self.logged.__setitem__(name, float(value))

    @property
    def model(self):
        return self.module.policy

    def rollout(self, qs, audio) -> Rollout:
        self.module.policy.train()
        return self.module.make_rollout({"questions": qs, "audio": audio})

    def update(self, ro: Rollout) -> float:
        self.module.update([ro])
        return self.logged["train/loss"]

    def step(self, qs, audio) -> Rollout:
        ro = self.rollout(qs, audio)
        self.update(ro)
        return ro


# ------------------------------------------------------------------ the reference step (R1-AQA / TRL)


def full_sequence_logps(model, input_ids, attention_mask, audio: dict):
    """R1-AQA's ``_get_per_token_logps``: logits for every position, log_softmax per row, gather.
    ``audio``: the processor's audio tensors, as the model takes them."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, **audio).logits
    logits, targets = logits[:, :-1].float(), input_ids[:, 1:]
    return torch.stack([row.log_softmax(-1).gather(-1, t.unsqueeze(-1)).squeeze(-1) for row, t in zip(logits, targets)])


def reference_rollout(h: Harness, qs, audio) -> Rollout:
    """Sampling as R1-AQA: ``generate(**inputs, num_return_sequences=G)`` (inputs expanded G times inside)."""
    m = h.module
    m.policy.train()
    inputs = m.encode(qs, audio)
    P = inputs["input_ids"].shape[1]
    # generate expands every input G times itself: with several windows per prompt (AF3 beyond 30 s)
    # that would misalign them, but the bench's 10 s clips are one window each
    out = m.policy.generate(
        **m.family.model_inputs(inputs),
        do_sample=True,
        temperature=1.0,
        top_p=1.0,
        max_new_tokens=NEW_TOKENS,
        num_return_sequences=G,
        suppress_tokens=m.suppress_ids,
    )
    completion_ids = out[:, P:]
    mask = completion_mask(completion_ids, m.eos_ids)
    texts = m.decode(completion_ids)
    total, per_fn = score_completions(texts, [q for q in qs for _ in range(G)], m.rewards)
    return Rollout(
        qs, inputs, completion_ids, mask, texts, total, per_fn, group_advantages(total, G, "group").to(DEVICE)
    )


def reference_update(h: Harness, ro: Rollout, beta: float = BETA) -> float:
    """R1-AQA's loss on one prompt's G completions at a time (its per-GPU batch), summed to the step mean."""
    m, inputs = h.module, ro.inputs
    B, P = inputs["input_ids"].shape
    N = ro.completion_ids.shape[0]
    total = 0.0
    for b in range(B):
        rows = slice(b * G, (b + 1) * G)
        rep = {k: v[b : b + 1].repeat_interleave(G, 0) for k, v in inputs.items()}  # aligned, unlike R1-AQA's .repeat
        ids = torch.cat([rep["input_ids"], ro.completion_ids[rows]], 1)
        mask = ro.mask[rows]
        attention = torch.cat([rep["attention_mask"], mask], 1)
        args = (ids, attention, m.family.audio_inputs(m.family.model_inputs(rep)))
        logp = full_sequence_logps(m.policy, *args)[:, P - 1 :]
        with torch.inference_mode():
            ref_logp = full_sequence_logps(m.ref_policy, *args)[:, P - 1 :]
        kl = torch.exp(ref_logp - logp) - (ref_logp - logp) - 1
        A = ro.advantages[rows].unsqueeze(1)
        per_token = -(torch.exp(logp - logp.detach()) * A - beta * kl)
        loss = ((per_token * mask).sum(1) / mask.sum(1)).sum() / N  # the step's mean over its N completions
        loss.backward()
        total += float(loss)
    params = [p for p in m.policy.parameters() if p.grad is not None]
    torch.nn.utils.clip_grad_norm_(params, float("inf"))
    h.opt.step()  # copies the gradients first when h.capture is set
    h.opt.zero_grad(set_to_none=True)
    return total


def reference_step(h: Harness, qs, audio) -> Rollout:
    ro = reference_rollout(h, qs, audio)
    reference_update(h, ro)
    return ro


# ------------------------------------------------------------------ agreement on one rollout


def compare_on_one_rollout(h: Harness, qs, audio, seed: int = 0) -> dict:
    """The project's update and the reference update on the same rollout: loss and every gradient.

    The rollout's advantages are replaced by seeded normal values (a fitted policy's rewards are
    often all equal within a group, which would make both losses exactly 0).
    """
    torch.manual_seed(seed)
    ro = h.rollout(qs, audio)
    ro.advantages = torch.randn(ro.completion_ids.shape[0], generator=torch.Generator().manual_seed(seed)).to(DEVICE)
    h.capture = True
    try:
        loss_p = h.update(ro)
        grads_p = h.grads
        loss_r = reference_update(h, ro)
        grads_r = h.grads
    finally:
        h.capture = False
    diff = max(float((grads_p[n] - grads_r[n]).abs().max()) for n in grads_r)
    scale = max(float(g.abs().max()) for g in grads_r.values())
    encoder = {id(p) for p in h.module.family.audio_encoder(h.model.model).parameters()}
    enc = [n for n, p in h.model.named_parameters() if id(p) in encoder and n in grads_r]
    enc_diff = max(float((grads_p[n] - grads_r[n]).abs().max()) for n in enc)
    enc_scale = max(float(grads_r[n].abs().max()) for n in enc)
    assert grads_p.keys() == grads_r.keys()
    return {
        "loss_project": loss_p,
        "loss_reference": loss_r,
        "loss_abs_diff": abs(loss_p - loss_r),
        "loss_rel_diff": abs(loss_p - loss_r) / max(abs(loss_r), 1e-30),
        "grad_abs_diff": diff,
        "grad_rel_diff": diff / scale,
        "grad_max": scale,
        "encoder_grad_rel_diff": enc_diff / enc_scale,
        "n_tensors": len(grads_r),
        "completion_tokens": int(ro.mask.sum()),
    }


# ------------------------------------------------------------------ timing


class PeakCUDA:
    """Peak allocated GPU memory (MiB) of a block above what was allocated at its start."""

    def __enter__(self):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self.base = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc):
        torch.cuda.synchronize()
        self.mib = (torch.cuda.max_memory_allocated() - self.base) / 2**20
        return False


def timed(fn, *args) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of this process, peak MiB) of one call, on the device the bench runs on."""
    with PeakCUDA() if DEVICE.type == "cuda" else PeakRSS() as mem:
        t0, c0 = time.perf_counter(), time.process_time()
        fn(*args)
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()  # the kernels have run before the clock is read
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return dt, cpu, mem.mib


def bench_step(h: Harness, B: int, reps: int, seed: int) -> dict:
    qs, audio = questions(B, seed=seed)
    cmp = compare_on_one_rollout(h, qs, audio, seed)  # also the project's warm-up
    reference_rollout(h, qs, audio)  # with the line above: the reference's warm-up
    res = {"project": defaultdict(list), "reference": defaultdict(list)}
    for r in range(reps):
        order = (("project", h.step), ("reference", reference_step))
        for name, fn in order if r % 2 == 0 else order[::-1]:
            dt, cpu, mib = timed(fn, *((qs, audio) if name == "project" else (h, qs, audio)))
            res[name]["s"].append(dt)
            res[name]["cpu"].append(cpu)
            res[name]["mib"].append(mib)
    out = {
        name: {
            "s": statistics.median(v["s"]),
            "all_s": v["s"],
            "cpu": statistics.median(v["cpu"]),
            "mib": max(v["mib"]),
        }
        for name, v in res.items()
    }
    # each repetition's two steps ran back to back: their ratio sees the same neighbours' load
    out["paired"] = [rf / pr for pr, rf in zip(res["project"]["s"], res["reference"]["s"])]
    out["compare"] = cmp
    return out


def bench_eval(h: Harness, n_items: int, batch: int, reps: int, seed: int) -> dict:
    """Items/s of the module's ``answer`` (stops after ``</answer>``) vs plain greedy 256-token generation."""
    from r1aqa_pl.task.answer_format import extract_answer

    m = h.module
    qs, audio = questions(n_items, seed=seed)
    chunks = [(qs[i : i + batch], audio[i : i + batch]) for i in range(0, n_items, batch)]
    steps = {"project": [], "plain": []}
    engine_answer = m.engine.answer

    def counting_answer(*a, **k):
        ids = engine_answer(*a, **k)
        steps["project"].append(ids.shape[1])
        return ids

    def project():
        m.engine.answer = counting_answer  # this module's engine object only
        try:
            return [t for q, a in chunks for t in m.answer(q, a)]
        finally:
            del m.engine.answer

    @torch.no_grad()
    def plain():
        m.policy.eval()
        texts = []
        for q, a in chunks:
            inputs = m.encode(q, a)
            out = m.policy.generate(**m.family.model_inputs(inputs), do_sample=False, max_new_tokens=EVAL_NEW_TOKENS)
            steps["plain"].append(out.shape[1] - inputs["input_ids"].shape[1])
            texts += m.decode(out[:, inputs["input_ids"].shape[1] :])
        return texts

    answers = {"project": project(), "plain": plain()}  # warm-up, and the answers to compare
    for s in steps.values():
        s.clear()
    times = {"project": [], "plain": []}
    for r in range(reps):
        for name, fn in (
            (("project", project), ("plain", plain)) if r % 2 == 0 else (("plain", plain), ("project", project))
        ):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    pred = {k: [extract_answer(t) for t in v] for k, v in answers.items()}
    out = {
        k: {
            "items_s": n_items / statistics.median(v),
            "s": statistics.median(v),
            "new_tokens": statistics.mean(steps[k]),
        }
        for k, v in times.items()
    }
    out["same_predictions"] = sum(a == b for a, b in zip(pred["project"], pred["plain"])) / n_items
    out["answered"] = sum("</answer>" in t for t in answers["project"]) / n_items
    out["example"] = answers["plain"][0][:120]
    return out


# ------------------------------------------------------------------ profile


class PhaseTimer:
    """Wall time of the project step by phase, and of the audio encoder / LM / head forwards inside each."""

    def __init__(self, h: Harness):
        self.h, self.t, self.phase = h, defaultdict(float), "other"

    @contextlib.contextmanager
    def _in(self, name):
        prev, self.phase = self.phase, name
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.t[name] += time.perf_counter() - t0
            self.phase = prev

    def _wrap(self, name_fn, fn):
        def wrapped(*a, **k):
            with self._in(name_fn(*a, **k)):
                return fn(*a, **k)

        return wrapped

    @contextlib.contextmanager
    def installed(self):
        m = self.h.module  # only this module's own objects are wrapped, and unwrapped after
        m.engine.sample = self._wrap(lambda *a, **k: "rollout", m.engine.sample)
        m.micro_logprobs = self._wrap(
            lambda *a, **k: "policy forward" if torch.is_grad_enabled() else "reference log-probs", m.micro_logprobs
        )
        m.encode = self._wrap(lambda *a, **k: "encode prompts (processor)", type(m).encode.__get__(m))
        backward = m.manual_backward
        m.manual_backward = self._wrap(lambda *a, **k: "backward", backward)
        opt_step = self.h.opt.step
        self.h.opt.step = self._wrap(lambda *a, **k: "optimizer step", opt_step)
        encode_audio = m.family.encode_audio

        def timed_encoder(*a, **k):
            t0 = time.perf_counter()
            try:
                return encode_audio(*a, **k)
            finally:
                self.t[(self.phase, "audio encoder")] += time.perf_counter() - t0

        m.family.encode_audio = timed_encoder
        handles, starts = [], {}
        for mod in (m.policy.model.language_model, m.ref_policy.model.language_model):

            def pre(mod_, args, kwargs):
                starts[id(mod_)] = time.perf_counter()

            def post(mod_, args, kwargs, out):
                ids = kwargs.get("inputs_embeds")
                kind = "decode" if self.phase == "rollout" and ids is not None and ids.shape[1] == 1 else "prefill"
                self.t[(self.phase, f"LM {kind}")] += time.perf_counter() - starts.pop(id(mod_))

            handles += [
                mod.register_forward_pre_hook(pre, with_kwargs=True),
                mod.register_forward_hook(post, with_kwargs=True),
            ]
        try:
            yield self
        finally:
            del m.engine.sample, m.micro_logprobs, m.family.encode_audio, m.encode
            m.manual_backward, self.h.opt.step = backward, opt_step
            for hd in handles:
                hd.remove()


def profile_step(h: Harness, B: int, seed: int, top: int = 12) -> dict:
    qs, audio = questions(B, seed=seed)
    pt = PhaseTimer(h)
    with pt.installed():
        t0 = time.perf_counter()
        h.step(qs, audio)
        total = time.perf_counter() - t0
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        h.step(qs, audio)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=60)
    return {"total": total, "phases": dict(pt.t), "ops": table}


# ------------------------------------------------------------------ report


def _spread(ratios: list[float]) -> str:
    return f"{min(ratios):.1f}-{max(ratios):.1f}x"


def _fmt_mib(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.0f}"


def report(info: dict, steps: dict, ev: dict, prof: dict | None, args) -> str:
    lines = []
    p = info["parameters"]
    lines.append(
        f"bench policy: {sum(p.values()) / 1e6:.2f} M parameters ("
        + ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in p.items())
        + "); "
        f"LM width {info['geometry']['hidden_size']}, encoder width {info['geometry']['encoder_dim']}; "
        f"vocabulary {VOCAB}; "
        f"prompt = {info['prompt_tokens']} tokens of which {info['audio_tokens']} audio; "
        f"encoder window {info['encoder_positions']} positions; fitted {info['fit_steps']} SFT steps "
        f"(loss {info['fit_loss']:.3f}, {info['fit_s']:.0f} s)"
    )
    where = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "CPU"
    lines.append(
        f"torch {torch.__version__} on {where}, {torch.get_num_threads()} threads on {os.cpu_count()} cores "
        f"(OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}), "
        f"load average at start {info['load']}, at end {info['load_end']}, G = {G}, {NEW_TOKENS} new tokens, "
        f"beta = {BETA}, "
        f"{args.reps} timed repetitions after a warm-up (median)"
    )
    lines.append("")
    lines.append(
        "| step (rollout + update) | project s/step | reference s/step | speed-up | "
        "per repetition | speed-up in CPU s | project peak MiB | reference peak MiB | memory ratio |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for B, r in steps.items():
        pr, rf = r["project"], r["reference"]
        lines.append(
            f"| {B} prompt{'s' if B > 1 else ''} x {G} | {pr['s']:.2f} | {rf['s']:.2f} | "
            f"{rf['s'] / pr['s']:.1f}x | {_spread(r['paired'])} | {rf['cpu'] / pr['cpu']:.1f}x | "
            f"{_fmt_mib(pr['mib'])} | "
            f"{_fmt_mib(rf['mib'])} | {pr['mib'] / rf['mib']:.2f}x |"
        )
    lines.append("")
    lines.append(
        "| same rollout, fp32 | loss project | loss reference | abs diff | rel diff | "
        "max abs grad diff | rel to max grad | encoder rel |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for B, r in steps.items():
        c = r["compare"]
        lines.append(
            f"| {B} x {G} ({c['n_tensors']} tensors) | {c['loss_project']:.8f} | {c['loss_reference']:.8f} | "
            f"{c['loss_abs_diff']:.1e} | {c['loss_rel_diff']:.1e} | {c['grad_abs_diff']:.1e} | "
            f"{c['grad_rel_diff']:.1e} | {c['encoder_grad_rel_diff']:.1e} |"
        )
    lines.append("")
    lines.append(
        f"| evaluation ({args.eval_items} MMAU-style items, batch {args.eval_batch}, greedy) | items/s | "
        "new tokens per batch |"
    )
    lines.append("|---|---|---|")
    lines.append(
        f"| project: `answer` (stop after `</answer>`) | {ev['project']['items_s']:.2f} | "
        f"{ev['project']['new_tokens']:.0f} |"
    )
    lines.append(
        f"| plain `generate(max_new_tokens={EVAL_NEW_TOKENS})` | {ev['plain']['items_s']:.2f} | "
        f"{ev['plain']['new_tokens']:.0f} |"
    )
    lines.append(f"| ratio | {ev['project']['items_s'] / ev['plain']['items_s']:.1f}x | |")
    lines.append(
        f"\nsame extracted prediction in both paths: {ev['same_predictions']:.0%}; project outputs "
        f"containing </answer>: {ev['answered']:.0%}; a plain output: {ev['example']!r}"
    )
    if prof:
        lines.append("")
        lines.append(
            f"profile of one project step, {args.profile_prompts} prompts x {G} ({prof['total']:.2f} s, phase timers):"
        )
        lines.append("")
        lines.append("| phase | s | share | of which audio encoder fwd | LM prefill fwd | LM decode fwd |")
        lines.append("|---|---|---|---|---|---|")
        ph = prof["phases"]
        names = [k for k in ph if isinstance(k, str)]
        for n in sorted(names, key=lambda k: -ph[k]):
            sub = [ph.get((n, t), 0.0) for t in ("audio encoder", "LM prefill", "LM decode")]
            lines.append(
                f"| {n} | {ph[n]:.2f} | {ph[n] / prof['total']:.0%} | "
                + " | ".join(f"{x:.2f}" if x else "" for x in sub)
                + " |"
            )
        rest = prof["total"] - sum(ph[k] for k in names)
        lines.append(f"| rest (rewards, decoding text, bookkeeping) | {rest:.2f} | {rest / prof['total']:.0%} | | | |")
        lines.append("")
        lines.append("top operators (torch.profiler, self CPU time):")
        lines.append(prof["ops"])
    goal_B = max(steps)
    r = steps[goal_B]
    c = r["compare"]
    speed, memr = r["reference"]["s"] / r["project"]["s"], r["project"]["mib"] / r["reference"]["mib"]
    ev_ratio = ev["project"]["items_s"] / ev["plain"]["items_s"]
    lines.append("")
    lines.append("goals:")
    lines.append(
        f"  step >= 5x faster at {goal_B} x {G}: {speed:.1f}x (repetitions {_spread(r['paired'])}, "
        f"CPU s {r['reference']['cpu'] / r['project']['cpu']:.1f}x) -> {'met' if speed >= 5 else 'NOT met'}"
    )
    lines.append(f"  peak memory <= 0.5x: {memr:.2f}x -> {'met' if memr <= 0.5 else 'NOT met'}")
    ok = c["loss_rel_diff"] <= 1e-5 and c["grad_rel_diff"] <= 1e-5
    lines.append(
        f"  same loss and gradients within 1e-5 relative: loss {c['loss_rel_diff']:.1e}, "
        f"gradients {c['grad_rel_diff']:.1e} -> {'met' if ok else 'NOT met'}"
    )
    lines.append(f"  evaluation >= 5x items/s: {ev_ratio:.1f}x -> {'met' if ev_ratio >= 5 else 'NOT met'}")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the bench's reference figures use 2)")
    ap.add_argument("--prompts", type=int, nargs="+", default=[1, 4], help="prompts per step")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions per variant, after one warm-up")
    ap.add_argument("--fit-steps", type=int, default=30, help="SFT steps that teach the bench policy the answer format")
    ap.add_argument("--eval-items", type=int, default=16)
    ap.add_argument("--eval-batch", type=int, default=8, help="the Makefile's eval batch")
    ap.add_argument("--eval-reps", type=int, default=1, help="timed passes over the items, after a warm-up pass")
    ap.add_argument("--profile-prompts", type=int, default=4, help="0: skip the profile")
    ap.add_argument("--work", default=None, help="folder for the bench policy (default: a temporary one)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--family", default="qwen2_audio", help="the bench policy's family (r1aqa_pl.models.FAMILIES)")
    ap.add_argument("--device", default="cpu", help="cuda: time the steps on a GPU (fp32; peak = allocated GPU memory)")
    ap.add_argument(
        "--hidden",
        type=int,
        default=GEOMETRY["hidden_size"],
        help="the language model's width (8 heads); wider models spend less of a step on per-call overhead",
    )
    ap.add_argument("--encoder-dim", type=int, default=GEOMETRY["encoder_dim"], help="the audio encoder's width")
    args = ap.parse_args(argv)
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.backends.cudnn.allow_tf32 = False  # fp32 agreement: cuDNN's convolutions default to TF32

    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_start = time.perf_counter()
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or tmp
        print(f"building and fitting the bench policy in {work} ...", flush=True)
        policy_dir, ref_dir, info = build_bench_policy(
            work, args.fit_steps, args.seed, args.family, hidden_size=args.hidden, encoder_dim=args.encoder_dim
        )
        h = Harness(policy_dir, ref_dir)
        qs, audio = questions(1, seed=args.seed)
        enc = h.module.encode(qs, audio)
        info.update(
            load=load,
            prompt_tokens=int(enc["input_ids"].shape[1]),
            audio_tokens=int((enc["input_ids"] == h.module.processor.audio_token_id).sum()),
            encoder_positions=h.module.family.arch(h.model.config).audio_positions,
        )
        steps = {}
        for B in args.prompts:
            print(f"GRPO step, {B} prompt(s) x {G} ...", flush=True)
            steps[B] = bench_step(h, B, args.reps, seed=args.seed + B)
            for name in ("project", "reference"):
                r = steps[B][name]
                print(
                    f"  {name}: wall s {[round(x, 2) for x in r['all_s']]}, median CPU s {r['cpu']:.2f}, "
                    f"peak {r['mib']:.0f} MiB",
                    flush=True,
                )
        print("evaluation ...", flush=True)
        ev = bench_eval(h, args.eval_items, args.eval_batch, args.eval_reps, seed=args.seed + 77)
        prof = None
        if args.profile_prompts:
            print("profile ...", flush=True)
            prof = profile_step(h, args.profile_prompts, seed=args.seed + args.profile_prompts)
    info["load_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print()
    print(report(info, steps, ev, prof, args))
    if max(os.getloadavg()[:2]) > (os.cpu_count() or 1):
        print(
            "\nWARNING: other processes kept the machine busy (load average above the core count): with "
            "several threads per process, every parallel operator waits for descheduled threads and wall "
            "times become noise. Rerun on a quiet machine, or compare the CPU-seconds column."
        )
    print(f"\n(make bench wall time {time.perf_counter() - t_start:.0f} s)")


if __name__ == "__main__":
    main()
