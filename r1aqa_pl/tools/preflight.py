"""``r1aqa preflight``: the project's guarantees checked on your own checkpoint and data, in minutes, before a
long run. The same configuration ``lightning fit`` takes (``--config`` one or more times, plus overrides), or
``--model PATH --data FILE`` for a quick look; it runs on one device of the machine it is given.

Sections (each check passes, warns or fails; a failure says what to change):

1. loading — the family and why, dtype (and whether the device has it), parameters trainable / frozen / idle,
   the processor, the chat template, the structural tokens the rollout suppresses, what is missing;
2. prompts — the first N training and validation questions through the chat template (one shown), audio
   tokens per clip against the family's rule, clips longer than the encoder's window;
3. exactness — log-probs with the shared prefix vs the family's own unshared forward, and greedy answers with
   and without sharing, at the run's dtype, against a tolerance per dtype (:data:`TOLERANCE`);
4. agreement — the rollout's sampling log-probs vs the update's on the same completions;
5. resources — the memory estimate for this configuration next to the device's free memory, then one real
   GRPO step (rollout, reference, update) timed, its peak memory, and a rough projection for ``max_steps``;
6. data — the ``check-data`` summary of the configured files.

Exit status 1 when anything would make the run fail or silently wrong; the JSON report goes to ``--json``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

# max |Δ log p| per token, shared prefix vs unshared forward: fp32 differs by summation order only; half precisions
# by their rounding of the same sums in another order (measured on the tiny builds: see docs/preflight.md)
TOLERANCE = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 1e-1}
AGREEMENT_BAND = (0.5, 2.0)  # a token whose rollout/update probability ratio leaves it is counted


@dataclass
class Check:
    section: str
    name: str
    status: str  # ok | warn | fail | info
    detail: str
    fix: str = ""


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    facts: dict = field(default_factory=dict)

    def add(self, section: str, name: str, status: str, detail: str, fix: str = "") -> Check:
        c = Check(section, name, status, detail, fix)
        self.checks.append(c)
        return c

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    def table(self) -> str:
        mark = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "info": "    "}
        lines, section = [], None
        for c in self.checks:
            if c.section != section:
                section = c.section
                lines.append(f"\n== {section}")
            lines.append(f"  {mark[c.status]} {c.name:<28} {c.detail}")
            if c.fix:
                lines.append(f"       {'':<28} fix: {c.fix}")
        n = len(self.failed)
        lines.append(f"\npreflight: {'FAILED, ' + str(n) + ' check(s)' if n else 'passed'}"
                     f" ({sum(c.status == 'warn' for c in self.checks)} warning(s))")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"ok": not self.failed, "checks": [asdict(c) for c in self.checks], "facts": self.facts}


# ---------------------------------------------------------------- configuration

def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def run_settings(configs: list[str]) -> dict:
    """The run's own trainer settings from its YAML files (merged in order): devices, nodes, ZeRO stage and
    offload, max_steps, for the memory estimate and the projection (preflight itself runs on one device)."""
    import yaml

    cfg: dict = {}
    for c in configs:
        cfg = _merge(cfg, yaml.safe_load(Path(c).read_text()) or {})
    trainer = cfg.get("trainer") or {}
    strategy = trainer.get("strategy") or {}
    ds = (strategy.get("init_args") or {}) if isinstance(strategy, dict) else {}
    zero = ds.get("config") or {}
    if isinstance(zero, str) and Path(zero).is_file():
        zero = json.loads(Path(zero).read_text())
    zero = zero.get("zero_optimization", {}) if isinstance(zero, dict) else {}
    devices = trainer.get("devices", 1)
    return {
        "devices": devices if isinstance(devices, int) and devices > 0 else 1,
        "num_nodes": int(trainer.get("num_nodes") or 1),
        "zero_stage": int(zero.get("stage", ds.get("stage", 0)) or 0),
        "offload_optimizer": bool(zero.get("offload_optimizer") or ds.get("offload_optimizer")),
        "offload_params": bool(zero.get("offload_param") or ds.get("offload_parameters")),
        "max_steps": int(trainer.get("max_steps") or -1),
    }


def build(configs: list[str], overrides: list[str], model: str | None, data: str | None, val: str | None,
          dtype: str | None = None):
    """(module, datamodule, run settings): from the fit configuration (one device, no logger or callbacks) or
    from a model folder and a data file."""
    if configs:
        from r1aqa_pl.cli import lightning_cli

        args = [a for c in configs for a in ("--config", c)] + list(overrides) + [
            "--trainer.accelerator=auto", "--trainer.devices=1", "--trainer.num_nodes=1", "--trainer.strategy=auto",
            "--trainer.logger=false", "--trainer.callbacks=[]", "--trainer.enable_checkpointing=false"]
        if model:
            args.append(f"--model.init_args.policy.model_name_or_path={model}")
        if data:
            args.append(f"--data.init_args.train_file={data}")
        if dtype:
            args.append(f"--model.init_args.policy.dtype={dtype}")
        cli = lightning_cli(args, run=False)
        return cli.model, cli.datamodule, run_settings(configs)
    if not (model and data):
        raise ValueError("preflight: give --config (the fit configuration) or both --model PATH and --data FILE")
    from r1aqa_pl.data.datamodule import AudioQADataModule
    from r1aqa_pl.training.grpo_module import GRPOModule

    module = GRPOModule(dict(model_name_or_path=model, dtype=dtype or "float32"), sampling=dict(G=4, max_new_tokens=64))
    dm = AudioQADataModule(train_file=data, val_file=val, feature_extractor=model, batch_size=1, val_batch_size=4)
    return module, dm, {"devices": 1, "num_nodes": 1, "zero_stage": 0, "offload_optimizer": False,
                        "offload_params": False, "max_steps": -1}


def device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def dtype_problem(dtype: str, device_type: str, bf16_supported: bool) -> str | None:
    """Why ``dtype`` cannot train on this device (None: it can)."""
    if device_type == "cuda" and dtype == "bfloat16" and not bf16_supported:
        return "this GPU has no bfloat16 (before Ampere): set policy.dtype float16 or float32"
    if device_type == "cpu" and dtype == "float16":
        return "float16 on the CPU is not a training dtype here: set policy.dtype float32 or bfloat16"
    return None


# ---------------------------------------------------------------- sections

def data_files(dm) -> list[tuple[str, str]]:
    """(label, path) of the run's training file and each validation file."""
    h = dm.hparams
    vals = h.val_file if isinstance(h.val_file, dict) else {"val": h.val_file} if h.val_file else {}
    return [(label, path) for label, path in [("train", h.train_file), *vals.items()] if path]


def check_data_section(report: Report, dm) -> None:
    from r1aqa_pl.data.check import check_data

    h = dm.hparams
    for label, path in data_files(dm):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            status = check_data(**{("train" if label == "train" else "val"): path}, audio_dir=h.audio_dir,
                                decode=False)
        text = out.getvalue()
        summary = next((line.strip() for line in text.splitlines() if "records:" in line), text.strip()[:200])
        report.facts.setdefault("data", {})[label] = text
        report.add("6 data", f"{label}: {Path(path).name}", "ok" if status == 0 else "fail", summary,
                   "" if status == 0 else f"`r1aqa check-data --{'train' if label == 'train' else 'val'} {path}` "
                   "lists the problems record by record")


def loading_section(report: Report, module) -> bool:
    """Load the policy as the run would; False when it cannot be loaded (the rest is skipped)."""
    from transformers import AutoConfig

    from r1aqa_pl.models import FAMILIES

    p = module.policy_config
    dev = device()
    problem = dtype_problem(p.dtype, dev.type, dev.type == "cuda" and torch.cuda.is_bf16_supported())
    report.add("1 loading", "dtype", "fail" if problem else "ok", f"{p.dtype} on {dev.type}", problem or "")
    if problem:
        return False
    try:
        cfg = AutoConfig.from_pretrained(p.model_name_or_path)
        why = (f"policy.family: {p.family}" if p.family else
               f"config.model_type {cfg.model_type!r} is one of its model_types")
        t0 = time.perf_counter()
        module.configure_model()
        module.to(dev)
    except Exception as e:  # noqa: BLE001 — any loading failure is the report's first line, with a fix
        report.add("1 loading", "load", "fail", f"{p.model_name_or_path}: {type(e).__name__}: {e}",
                   "check the folder holds config.json, the weights and the processor files (save_pretrained "
                   "of both), and that policy.family names its family when model_type is not a known one "
                   f"({', '.join(FAMILIES)})")
        return False
    fam, model, proc = module.family, module.policy, module.processor
    report.add("1 loading", "family", "ok", f"{fam.name} ({why}); loaded in {time.perf_counter() - t0:.1f} s")
    idle = {id(q) for m in fam.idle_modules(model) for q in m.parameters()}
    n = lambda ps: sum(q.numel() for q in ps)  # noqa: E731
    params = list(model.parameters())
    trainable = n(q for q in params if q.requires_grad)
    report.facts["parameters"] = {"trainable": trainable, "frozen": n(q for q in params if not q.requires_grad),
                                  "idle": n(q for q in params if id(q) in idle), "total": n(params)}
    f = report.facts["parameters"]
    report.add("1 loading", "parameters", "ok" if trainable else "fail",
               f"{f['total'] / 1e6:.1f} M: trainable {f['trainable'] / 1e6:.1f} M, frozen {f['frozen'] / 1e6:.1f} M "
               f"(idle for audio questions {f['idle'] / 1e6:.1f} M)",
               "" if trainable else "nothing to train: check policy.lora or the frozen modules")
    report.add("1 loading", "processor", "ok", f"{type(proc).__name__}, sampling rate "
               f"{proc.feature_extractor.sampling_rate} Hz")
    template = getattr(proc, "chat_template", None)
    report.add("1 loading", "chat template", "ok" if template else "fail",
               f"{len(template)} characters" if template else "the processor has no chat template",
               "" if template else "save the processor with its chat template (processor.save_pretrained)")
    tok = proc.tokenizer
    rows = model.get_input_embeddings().num_embeddings
    # a token the processor added itself (the checkpoint's tokenizer lacks it) has an id past the embedding
    vocab = {t: i for t, i in tok.get_vocab().items() if i < rows}
    missing = [t for t in fam.structural_tokens if t not in vocab]
    placeholder = fam.audio_placeholder
    report.add("1 loading", "structural tokens", "fail" if placeholder in missing else "warn" if missing else "ok",
               f"suppressed while sampling: {len(module.suppress_ids)} ids "
               f"({', '.join(t for t in fam.structural_tokens if t in vocab)})"
               + (f"; not in the tokenizer: {', '.join(missing)}" if missing else ""),
               (f"the audio placeholder {placeholder!r} is missing from the tokenizer: the processor cannot mark "
                "where the audio goes; use the checkpoint's own tokenizer" if placeholder in missing else ""))
    for name, status, detail, fix in fam_extras(fam, p.model_name_or_path):
        report.add("1 loading", name, status, detail, fix)
    return placeholder not in missing and bool(template)


def fam_extras(fam, path: str) -> list[tuple[str, str, str, str]]:
    """What a family needs beyond the folder: Phi-4's speech adapter, torchvision for the Omni processors."""
    out = []
    if fam.name == "phi4_multimodal":
        has = fam.has_speech_adapter(path)
        out.append(("speech-lora adapter", "ok" if has else "warn",
                    "merged into the weights" if has else "no speech-lora/ folder: the hub model answers audio "
                    "questions with that adapter", "" if has else "train from the hub folder (it has speech-lora/) "
                    "or from a folder where the adapter is already merged"))
    if fam.name in ("qwen2_5_omni", "qwen3_omni"):
        try:
            import torchvision  # noqa: F401

            out.append(("torchvision", "ok", "installed (the Omni processors import it)", ""))
        except ImportError:
            out.append(("torchvision", "fail", "not installed: the Omni processor cannot be built",
                        "pip install torchvision (the version matching torch)"))
    return out


def questions_of(dm, n: int) -> dict[str, list]:
    """The first ``n`` usable training and validation questions."""
    from r1aqa_pl.data.formats import check_audio, iter_questions
    from r1aqa_pl.task.question import Question

    h = dm.hparams
    out = {}
    for label, path in data_files(dm):
        qs = (check_audio(q) for q in iter_questions(path, h.audio_dir) if isinstance(q, Question))
        out[label] = [q for _, q in zip(range(n), (q for q in qs if isinstance(q, Question)))]
    return out


def prompts_section(report: Report, module, sets: dict[str, list]) -> list:
    """Render and encode each question alone; the training questions and their audio, for the next sections."""
    from r1aqa_pl.data.audio import load_clips
    from r1aqa_pl.models.base import clips_of

    fam, proc = module.family, module.processor
    fe = proc.feature_extractor
    sr, window = int(fe.sampling_rate), getattr(fe, "n_samples", None)
    placeholder = proc.tokenizer.convert_tokens_to_ids(fam.audio_placeholder)
    shown, long_clips, mismatches, failures, usable = False, [], [], [], []
    for label, qs in sets.items():
        for q in qs:
            try:
                text = fam.render(proc, q, module.template, module.policy_config.with_audio)
                audio = load_clips(q, sr) if module.policy_config.with_audio else None
                inputs = fam.encode(proc, [q], [audio], module.template, module.policy_config.with_audio)
            except Exception as e:  # noqa: BLE001 — a question the run could not ask
                failures.append(f"{q.source or q.id}: {type(e).__name__}: {e}")
                continue
            if not shown:
                report.facts["prompt"] = {"question": q.source or q.id, "text": text}
                report.add("2 prompts", "rendered (first question)", "info", json.dumps(text)[:300])
                shown = True
            if label == "train":
                usable.append((q, audio))
            if audio is None:
                continue
            clips = clips_of(audio)
            long_clips += [f"{q.source or q.id} ({len(c) / sr:.1f} s)" for c in clips if window and len(c) > window]
            rule = [fam.audio_tokens(proc, min(len(c), window or len(c))) for c in clips]
            got = int((inputs["input_ids"] == placeholder).sum())
            if None not in rule and sum(rule) != got:
                mismatches.append(f"{q.source or q.id}: the processor expanded {got} audio tokens, the family's "
                                  f"rule says {sum(rule)} for {[len(c) for c in clips]} samples")
    n = sum(len(qs) for qs in sets.values())
    report.add("2 prompts", "questions rendered", "fail" if failures else "ok",
               f"{n - len(failures)} of {n} ({', '.join(f'{k} {len(v)}' for k, v in sets.items())})"
               + (f"; first failure: {failures[0]}" if failures else ""),
               "the chat template must write one audio part per clip and the question's text: check the "
               "processor's chat_template (a template of another model version?)" if failures else "")
    report.add("2 prompts", "audio tokens per clip", "fail" if mismatches else "ok",
               mismatches[0] if mismatches else f"the processor's expansion equals {fam.name}'s rule on every clip",
               "the processor and the model disagree on the audio length: use the processor saved with "
               "this checkpoint (a newer transformers may expand differently)" if mismatches else "")
    report.add("2 prompts", "clips beyond the window", "warn" if long_clips else "ok",
               (f"{len(long_clips)} clip(s) longer than the encoder's {window / sr:.0f} s window, heard only up to "
                f"it: {', '.join(long_clips[:3])}") if long_clips else "none",
               "cut or split them, or accept that the model hears the first window" if long_clips else "")
    return usable


def _first_difference(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> tuple[float, tuple[int, int]]:
    diff = ((a - b).abs() * mask).float()
    i = int(diff.argmax())
    return float(diff.max()), (i // diff.shape[1], i % diff.shape[1])


def exactness_section(report: Report, module, usable: list, G: int = 2, new_tokens: int = 16) -> None:
    """Shared prefix vs the family's own forward (log-probs, greedy answers), and the rollout's sampling
    log-probs vs the update's, on the first few training questions at the run's dtype."""
    from r1aqa_pl.algo.logprobs import completion_logprobs, completion_mask

    if not usable:
        report.add("3 exactness", "questions", "fail", "no training question could be asked (see 2 prompts)")
        return
    fam, model, s = module.family, module.policy, module.sampling
    qs, audio = [q for q, _ in usable], [a for _, a in usable]
    inputs = module.encode(qs, audio)
    dtype = module.policy_config.dtype
    tol = TOLERANCE[dtype]
    kw = dict(max_new_tokens=min(new_tokens, s.max_new_tokens), suppress_tokens=module.suppress_ids)
    was = model.training
    model.eval()
    torch.manual_seed(0)
    ids, rollout_logp = module.engine.sample(fam, model, inputs, G, share_prompt=True, with_logprobs=True,
                                             do_sample=True, temperature=s.temperature, **kw)
    mask = completion_mask(ids, module.eos_ids)
    with torch.no_grad():
        lp = {share: completion_logprobs(fam, model, inputs, ids, mask, G, s.temperature, share)
              for share in (True, False)}
    worst, (row, tok) = _first_difference(lp[True], lp[False], mask)
    report.facts["exactness"] = {"dtype": dtype, "tolerance": tol, "max_abs_logp_diff": worst, "at": [row, tok]}
    report.add("3 exactness", "log-probs shared = unshared", "ok" if worst <= tol else "fail",
               f"max |Δ log p| {worst:.2e} (tolerance {tol:g} at {dtype}) over {int(mask.sum())} tokens, "
               f"largest at completion {row} token {tok}",
               "" if worst <= tol else "set policy.share_prompt false (the family's own forward) and report this "
               "checkpoint: the shared-prefix path differs from it on these weights")
    greedy = {share: module.engine.sample(fam, model, inputs, 1, share_prompt=share, do_sample=False, **kw)
              for share in (True, False)}
    same = greedy[True].shape == greedy[False].shape and torch.equal(greedy[True], greedy[False])
    where = "" if same else _first_token_difference(greedy[True], greedy[False])
    report.add("3 exactness", "greedy shared = unshared", "ok" if same else "fail" if dtype == "float32" else "warn",
               f"{len(qs)} questions, {kw['max_new_tokens']} tokens: " + ("identical" if same else where),
               "" if same else "in half precision a near-tie can flip one token; in float32 it is a bug: set "
               "policy.share_prompt false and report it")
    update = lp[module.policy_config.share_prompt]
    m = mask.bool()
    delta = (rollout_logp.to(update) - update)[m]
    ratio = delta.exp()
    lo, hi = AGREEMENT_BAND
    stats = {"mean_abs": float(delta.abs().mean()), "max_abs": float(delta.abs().max()),
             "outside_band": float(((ratio < lo) | (ratio > hi)).float().mean()), "tokens": int(m.sum())}
    report.facts["agreement"] = stats
    report.add("4 agreement", "rollout vs update log p", "ok" if stats["max_abs"] <= tol else "warn",
               f"mean |Δ| {stats['mean_abs']:.2e}, max {stats['max_abs']:.2e}; ratio outside [{lo}, {hi}] on "
               f"{100 * stats['outside_band']:.2f} % of {stats['tokens']} tokens",
               "" if stats["max_abs"] <= tol else "the update treats its own log-probs as the behaviour policy's: "
               "expect this much off-policy drift (higher precision, or a truncated importance correction)")
    model.train(was)


def _first_token_difference(a: torch.Tensor, b: torch.Tensor) -> str:
    T = min(a.shape[1], b.shape[1])
    diff = (a[:, :T] != b[:, :T]).nonzero()
    if not len(diff):
        return f"lengths differ ({a.shape[1]} vs {b.shape[1]} tokens)"
    r, t = diff[0].tolist()
    return f"first difference at answer {r} token {t}"


def estimate(module, run: dict, usable: list) -> dict:
    """The memory model (``r1aqa memory``) for this configuration: bytes per device by term."""
    from r1aqa_pl.models.base import clips_of
    from r1aqa_pl.tools.memory import RunConfig, estimate_memory

    p, s, o = module.policy_config, module.sampling, module.optimization
    params = list(module.policy.parameters())
    sr = module.processor.feature_extractor.sampling_rate
    seconds = [len(c) / sr for _, a in usable if a is not None for c in clips_of(a)] or [10.0]
    wb = {"float32": 4, "bfloat16": 2, "float16": 2}[p.dtype]
    cfg = RunConfig("this configuration", n_gpus=run["devices"] * run["num_nodes"], zero_stage=run["zero_stage"],
                    offload_optimizer=run["offload_optimizer"], offload_params=run["offload_params"],
                    lora=bool(p.lora), gradient_checkpointing=p.gradient_checkpointing, weight_bytes=wb,
                    grad_bytes=wb, master_weights=wb == 2, reference=module.beta > 0 and not p.lora, G=s.G,
                    micro_batch_prompts=o.micro_batch_prompts, max_new_tokens=s.max_new_tokens,
                    audio_seconds=max(seconds), activation_bytes=wb)
    trainable = sum(q.numel() for q in params if q.requires_grad)
    return estimate_memory(trainable, sum(q.numel() for q in params), cfg, module.family.arch(module.policy.config))


def resources_section(report: Report, module, dm, run: dict, usable: list, memory_gb: float | None,
                      step: bool) -> None:
    dev = device()
    try:
        est = estimate(module, run, usable)
    except Exception as e:  # noqa: BLE001 — a family without an arch: say so, go on
        report.add("5 resources", "memory estimate", "warn", f"no estimate ({type(e).__name__}: {e})")
        est = None
    free = memory_gb * 1e9 if memory_gb else torch.cuda.mem_get_info(dev)[0] if dev.type == "cuda" else None
    if est is not None:
        report.facts["memory_estimate_gb"] = {k: round(v / 1e9, 3) for k, v in est.items()}
        n = run["devices"] * run["num_nodes"]
        where = f"{free / 1e9:.2f} GB {'given' if memory_gb else 'free on ' + str(dev)}" if free else "not checked"
        fits = free is None or est["peak"] <= free
        report.add("5 resources", "memory estimate", "ok" if fits else "fail",
                   f"peak {est['peak'] / 1e9:.2f} GB per device for {n} device(s) (resident "
                   f"{est['resident'] / 1e9:.2f}, rollout {est['rollout'] / 1e9:.2f}, "
                   f"update {est['update'] / 1e9:.2f}); {where}",
                   "" if fits else "lower micro_batch_prompts or G, turn on gradient_checkpointing, LoRA, or ZeRO-3 "
                   "with offload (docs/performance.md has the table); or more devices")
        if not fits:
            return
    if step:
        one_step(report, module, dm, run, dev)


def one_step(report: Report, module, dm, run: dict, dev: torch.device) -> None:
    """One real optimizer step through Lightning on this device, timed by phase."""
    import resource

    import lightning as L

    timing = {"rollout": 0.0, "reference": 0.0}

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                timing[name] += time.perf_counter() - t
        return wrapper

    class Clock(L.Callback):  # the step itself, without the fit's start-up (data setup, optimizer)
        def on_train_batch_start(self, *args):
            timing.setdefault("start", time.perf_counter())

        def on_train_batch_end(self, *args):
            timing["end"] = time.perf_counter()

    module.sample = timed("rollout", module.sample)
    module.ref_logprobs = timed("reference", module.ref_logprobs)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    trainer = L.Trainer(accelerator=dev.type, devices=1, max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, callbacks=[Clock()])
    t0 = time.perf_counter()
    try:
        trainer.fit(module, dm)
    except Exception as e:  # noqa: BLE001 — the step's failure is the finding
        report.add("5 resources", "one GRPO step", "fail", f"{type(e).__name__}: {e}",
                   "out of memory: see the estimate's fixes; otherwise run `lightning fit` with --debug-level "
                   "logging on a few steps")
        return
    startup = timing.pop("start", t0) - t0
    total = timing.pop("end", time.perf_counter()) - t0 - startup
    update = max(total - timing["rollout"] - timing["reference"], 0.0)
    peak = (torch.cuda.max_memory_allocated(dev) / 1e9 if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6)
    report.facts["step"] = {"seconds": total, **timing, "update": update, "startup": startup, "peak_gb": peak,
                            "peak_kind": "GPU allocated" if dev.type == "cuda" else "host RSS (process)"}
    report.add("5 resources", "one GRPO step", "ok" if trainer.global_step == 1 else "fail",
               f"{total:.1f} s: rollout {timing['rollout']:.1f}, reference {timing['reference']:.1f}, update "
               f"{update:.1f} (the fit's start-up before it: {startup:.1f} s); peak {peak:.2f} GB "
               f"({report.facts['step']['peak_kind']})")
    if run["max_steps"] > 0:
        hours = total * run["max_steps"] / 3600
        report.add("5 resources", "projection (rough)", "info",
                   f"{run['max_steps']} steps × {total:.1f} s ≈ {hours:.1f} h: one device's first step (its warm-up "
                   "included, no communication, no validation), the run's devices each taking the same share")


# ---------------------------------------------------------------- the command

def preflight(configs: list[str], overrides: list[str] = (), model: str | None = None, data: str | None = None,
              val: str | None = None, items: int = 2, memory_gb: float | None = None, step: bool = True,
              dtype: str | None = None) -> Report:
    """The checks of every section (see the module docstring) as a :class:`Report`."""
    report = Report()
    module, dm, run = build(configs, list(overrides), model, data, val, dtype)
    report.facts["run"] = run
    check_data_section(report, dm)
    if loading_section(report, module):
        sets = questions_of(dm, items)
        usable = prompts_section(report, module, sets)
        if not any(c.status == "fail" for c in report.checks if c.section == "2 prompts"):
            exactness_section(report, module, usable)
        resources_section(report, module, dm, run, usable, memory_gb, step and not report.failed)
    return report


def main(argv: list[str] | None = None) -> int:
    """Check the project's guarantees on your own checkpoint and data before a long run."""
    ap = argparse.ArgumentParser(prog="r1aqa preflight", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", action="append", default=[],
                    help="the fit configuration (repeatable, as lightning fit)")
    ap.add_argument("--model", help="a model folder or hub id (quick form, or overriding the config's)")
    ap.add_argument("--data", help="a training file (quick form, or overriding the config's)")
    ap.add_argument("--val", help="a validation file (quick form)")
    ap.add_argument("--dtype", choices=list(TOLERANCE), help="the policy's dtype (default: the config's, or float32)")
    ap.add_argument("--items", type=int, default=2, help="questions per file to render and score (default 2)")
    ap.add_argument("--memory_gb", type=float, help="the device memory to plan for (default: the GPU's free memory)")
    ap.add_argument("--no_step", action="store_true", help="skip the one real GRPO step")
    ap.add_argument("--json", default="preflight.json", help="where the JSON report goes (default preflight.json)")
    args, overrides = ap.parse_known_args(argv)
    if args.items < 1:
        ap.error("--items must be at least 1")
    report = preflight(args.config, overrides, args.model, args.data, args.val, args.items, args.memory_gb,
                       not args.no_step, args.dtype)
    print(report.table())
    Path(args.json).write_text(json.dumps(report.to_dict(), indent=1, default=str), encoding="utf-8")
    print(f"report: {args.json}")
    return 1 if report.failed else 0
