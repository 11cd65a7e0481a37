"""The policy-family seam: what differs between audio language models, behind one small class.

A family adapter owns loading (hub id or folder), the prompt through the processor's own chat
template, the processor call, the prompt embeddings with the audio merged, reaching the decoder and
LM head through a peft wrapper, the tokens sampling must never emit, and reading a loaded config's
architecture numbers (:meth:`PolicyFamily.arch`). Everything else — log-probabilities at completion
positions, shared-prefix rollouts and updates, rewards, the loss — is family-free and calls these
methods (:mod:`r1aqa_pl.algo.logprobs`, :mod:`r1aqa_pl.rollout`). Beside the adapters:
:mod:`r1aqa_pl.models.sizes` holds the :class:`~r1aqa_pl.models.sizes.Arch` dataclasses that ``arch``
builds and the published checkpoints' numbers the memory estimate reads, and :mod:`r1aqa_pl.models.tiny`
each family's tiny random build (``build_tiny_model``) for tests, the demo and the bench.

Adding a family: a subclass in a module of your own, named in the config by its ``class_path``
(``policy.family: my_module.MyFamily``); a built-in registers with ``@FAMILIES.register("name")`` (and its
tiny build in :data:`r1aqa_pl.models.tiny.BUILDERS`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Literal, get_args

import torch
from torch import Tensor

from r1aqa_pl.models.sizes import Arch
from r1aqa_pl.registry import Registry
from r1aqa_pl.task import prompts
from r1aqa_pl.task.question import Question

AUDIO_EMBEDS = "audio_embeds"  # the key of :meth:`PolicyFamily.with_audio_embeds`'s stored encoder output
CLIP_COUNTS = "audio_clip_counts"  # [B] clips per prompt, where :meth:`PolicyFamily.encode` packed them per prompt

Dtype = Literal["float32", "bfloat16", "float16"]  # configs and the CLI check it at start-up
DTYPES = get_args(Dtype)


def position_ids(attention_mask: Tensor) -> Tensor:
    """Positions as ``generate`` makes them for left padding: cumsum of the mask minus one, 0 on pads."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 0)


def _check_slots(n_slots: int, feats: Tensor) -> None:
    if n_slots != feats.shape[0]:
        raise ValueError(f"{n_slots} audio placeholder tokens in the prompts but {feats.shape[0]} audio features: "
                         "were the prompts and features made by the same processor?")


def _first_rows(counts: Tensor, width: int) -> Tensor:
    """[B, width] True in row b's first ``counts[b]`` places (prompt b's stored audio features)."""
    return torch.arange(width, device=counts.device) < counts[:, None]


def whisper_tokens(frames: int) -> int:
    """Tokens of ``frames`` mel frames after a Whisper-style encoder: stride-2 convolution, then pooling by 2."""
    return ((frames - 1) // 2 + 1 - 2) // 2 + 1


def clips_of(audio) -> list:
    """A question's audio as a list of clips: one waveform, or a list of them (a multi-audio question)."""
    if isinstance(audio, (list, tuple)) and len(audio) and (isinstance(audio[0], (list, tuple))
                                                            or getattr(audio[0], "ndim", 0) >= 1):
        return list(audio)
    return [audio]


def pack_clips(inputs: dict[str, Tensor], counts: list[int], keys: tuple[str, ...]) -> dict[str, Tensor]:
    """The processor's audio tensors (one row per clip) packed one row per prompt, [B, most clips, ...]
    zero-padded, with the counts under :data:`CLIP_COUNTS`: the family-free code repeats and slices inputs
    by prompt. Unchanged when every prompt has one clip."""
    if all(c == 1 for c in counts):
        return inputs
    out = dict(inputs)
    for k in keys:
        if k not in inputs:
            continue
        v = inputs[k]
        if v.shape[0] != sum(counts):
            raise ValueError(f"the processor's {k!r} has {v.shape[0]} rows for {sum(counts)} clips "
                             f"({counts} per prompt)")
        packed = v.new_zeros(len(counts), max(counts), *v.shape[1:])
        packed[_first_rows(torch.tensor(counts), max(counts))] = v
        out[k] = packed
    out[CLIP_COUNTS] = torch.tensor(counts)
    return out


class PolicyFamily:
    """One audio LM family. Subclasses set the class attributes and override what their model does
    differently; the defaults fit a ``transformers`` model whose ``.model`` runs the decoder on
    ``inputs_embeds`` with a cache and whose ``.lm_head`` maps hidden states to the vocabulary."""

    name: str = ""
    model_types: tuple[str, ...] = ()  # config.model_type values this family loads
    audio_keys: tuple[str, ...] = ()   # processor outputs that carry the audio
    structural_tokens: tuple[str, ...] = ()  # never sampled: one sampled audio placeholder breaks the next forward
    # LoRA on the language model's projections only (a plain name list would also hit the encoder's q/k/v)
    lora_target_modules: str = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    lora_exclude_modules: str | None = None  # where peft turns the pattern into bare names (see qwen3_omni.py)
    max_clips: int | None = None  # clips one question may have (None: any); checked when a run starts

    @property
    def audio_placeholder(self) -> str:
        """The token the chat template writes once per clip (the first of :attr:`structural_tokens`)."""
        return self.structural_tokens[0] if self.structural_tokens else ""

    # -- loading --------------------------------------------------------------------------------
    def model_class(self):
        raise NotImplementedError

    def load(self, model_name_or_path: str, dtype: Dtype = "float32", attn_implementation: str | None = None):
        """(model, processor) from a hub id or folder; the processor pads on the left (generation appends right).

        Loading leaves torch's random state as it found it: under ZeRO-3 (``zero.Init``) the modules are built on
        real devices, and one that draws in its constructor (Phi-4's image pooling probe) would otherwise shift
        every later draw, so that the same seed sampled other rollouts with DeepSpeed than without."""
        from transformers import AutoProcessor

        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
        processor = AutoProcessor.from_pretrained(model_name_or_path)
        processor.tokenizer.padding_side = "left"
        kwargs = {"dtype": getattr(torch, dtype), **self.load_kwargs(model_name_or_path)}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
            model = self.model_class().from_pretrained(model_name_or_path, **kwargs)
        self.after_load(model)
        return model, processor

    def load_kwargs(self, model_name_or_path: str) -> dict:
        """Extra ``from_pretrained`` arguments for this checkpoint (e.g. the part of a larger model to read)."""
        return {}

    def after_load(self, model) -> None:
        """Fix-ups ``from_pretrained`` leaves undone; the :meth:`idle_modules` frozen, so they stay off the optimizer
        (and out of DDP's gradient buckets)."""
        for m in self.idle_modules(model):
            m.requires_grad_(False)

    def idle_modules(self, model) -> list:
        """The modules an audio question never runs (vision encoders and the like): frozen, and under ZeRO-3 left
        partitioned while the rest is gathered for generation. ``model``: the family's model, or a peft wrapper."""
        return []

    # -- prompts and processor ------------------------------------------------------------------
    def render(self, processor, q: Question, template: str = "plain", with_audio: bool = True) -> str:
        """The full prompt text with the generation prompt, as the model sees it before audio expansion."""
        return processor.apply_chat_template(prompts.messages(q, template, with_audio), add_generation_prompt=True,
                                             tokenize=False)

    def encode(self, processor, questions: list[Question], audio: list, template: str = "plain",
               with_audio: bool = True) -> dict[str, Tensor]:
        """Render each question's prompt and run the processor (left padding, audio at its rate); a question's
        audio is one clip or a list of clips (:func:`clips_of`), whose rows :func:`pack_clips` packs per prompt."""
        texts = [self.render(processor, q, template, with_audio) for q in questions]
        if not with_audio:
            return dict(processor(text=texts, return_tensors="pt", padding=True))
        clips = self.check_clips(questions, audio, texts)
        flat = [c for cs in clips for c in cs]
        sr = processor.feature_extractor.sampling_rate
        extra = self.audio_kwargs(processor, flat)
        inputs = dict(processor(text=texts, audio=flat, sampling_rate=sr, return_tensors="pt", padding=True,
                                **({"audio_kwargs": extra} if extra else {})))
        return pack_clips(inputs, [len(c) for c in clips], self.audio_keys)

    def check_clips(self, questions: list[Question], audio: list, texts: list[str]) -> list[list]:
        """Each question's clips; an error when one is missing or when the chat template did not write one
        placeholder per clip (a family whose template takes one audio part per turn, asked several clips)."""
        if any(a is None for a in audio):
            missing = [q.source or q.id for q, a in zip(questions, audio) if a is None]
            raise ValueError(f"audio missing for {missing}; use with_audio=False for the audio-free ablation")
        clips = [clips_of(a) for a in audio]
        for q, cs, text in zip(questions, clips, texts):
            written = text.count(self.audio_placeholder) if self.audio_placeholder else len(cs)
            if written != len(cs):
                raise ValueError(
                    f"{q.source or q.id}: {len(cs)} clips but the {self.name or type(self).__name__} chat template "
                    f"wrote {written} audio placeholder(s) {self.audio_placeholder!r}: this family does not take "
                    "several clips in one question (use a family that does, e.g. qwen2_audio or qwen2_5_omni)")
        return clips

    def audio_tokens(self, processor, n_samples: int) -> int | None:
        """Audio placeholder tokens the processor should expand one clip of ``n_samples`` to, by the family's own
        rule (``r1aqa preflight`` checks the processor against it); None where the family states no rule."""
        return None

    def audio_kwargs(self, processor, audio: list) -> dict:
        """Feature-extractor arguments for this batch of clips beyond the processor's own (none by default)."""
        return {}

    def structural_token_ids(self, processor) -> list[int]:
        """Ids of :attr:`structural_tokens` in this processor's vocabulary."""
        tok = processor.tokenizer
        ids = [tok.convert_tokens_to_ids(t) for t in self.structural_tokens]
        return sorted({i for i in ids if i is not None and i != tok.unk_token_id})

    # -- the forward pieces the family-free code composes ----------------------------------------
    def backbone(self, model):
        """(decoder-with-audio core, lm_head) through a possible peft wrapper."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        return base.model, base.lm_head

    def language_model(self, core):
        """The text decoder inside ``core`` (its gradient-checkpointing flag, hooks)."""
        return core.language_model

    def audio_encoder(self, core):
        return core.audio_tower

    def position_ids(self, attention_mask: Tensor) -> Tensor:
        return position_ids(attention_mask)

    def before_generate(self, model) -> None:
        """Reset state a family keeps between forwards (none by default) before ``generate`` runs."""

    def routers(self, model) -> list:
        """A mixture-of-experts family's router modules in layer order; [] for a dense family."""
        return []

    def chosen_experts(self, router_output) -> Tensor:
        """The expert indices [tokens, k] one router call chose, from that router's forward output."""
        raise NotImplementedError

    @contextmanager
    def on_router_calls(self, model, record):
        """Within the block, ``record(layer, output)`` after every router call (none for a dense family)."""
        handles = [r.register_forward_hook(lambda mod, args, out, i=i: record(i, out))
                   for i, r in enumerate(self.routers(model))]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    @contextmanager
    def record_routes(self, model):
        """Within the block, each router call's chosen experts (sorted, int16) per layer: yields ``routes`` with
        ``routes[layer]`` the calls' [tokens, k] in call order; an empty list for a dense family."""
        routes: list[list[Tensor]] = [[] for _ in self.routers(model)]
        keep = lambda i, out: routes[i].append(self.chosen_experts(out).detach().sort(-1).values.to(torch.int16))  # noqa: E731
        with self.on_router_calls(model, keep):
            yield routes

    def collect_router_logits(self, model):
        """A mixture-of-experts family: a context collecting its routers' logits (see ``router_aux_loss``)."""
        raise ValueError(f"{self.name} has no experts: router_aux_loss_coef > 0 needs a mixture-of-experts family")

    def router_aux_loss(self, model, router_logits: list[Tensor]) -> Tensor:
        """The routers' load-balancing loss from the logits ``collect_router_logits`` gathered."""
        raise NotImplementedError

    def audio_inputs(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """The audio tensors of :meth:`encode`'s output (with the clip counts where clips were packed per prompt)."""
        return {k: inputs[k] for k in (*self.audio_keys, CLIP_COUNTS) if k in inputs}

    def model_inputs(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """:meth:`encode`'s tensors (one row per prompt, so they repeat and slice by prompt) as the model's
        own forward and ``generate`` take them: several clips of a prompt unpacked to one row per clip, in order."""
        if CLIP_COUNTS not in inputs:
            return inputs
        counts = inputs[CLIP_COUNTS]
        out = {k: v for k, v in inputs.items() if k != CLIP_COUNTS}
        for k in self.audio_keys:
            if k in out:
                out[k] = out[k][_first_rows(counts.to(out[k].device), out[k].shape[1])]
        return out

    def encode_audio(self, core, input_features: Tensor, feature_attention_mask: Tensor) -> Tensor:
        """The audio encoder over each clip: [Σ audio tokens, hidden], one row per placeholder token."""
        raise NotImplementedError

    def audio_features(self, core, inputs: dict[str, Tensor]) -> Tensor:
        """:meth:`encode_audio` on the processor's features and their mask (one row per clip)."""
        inputs = self.model_inputs(inputs)
        return self.encode_audio(core, inputs["input_features"], inputs["feature_attention_mask"])

    def with_audio_embeds(self, core, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """``inputs`` plus the audio encoder's output per prompt, [B, most slots, hidden] zero-padded, under
        ``AUDIO_EMBEDS``: :meth:`prompt_embeds` then reads it instead of running the encoder (a frozen encoder
        whose output the rollout, reference and policy passes share). Unchanged without audio."""
        if "input_features" not in inputs:
            return inputs
        feats = self.audio_features(core, inputs)
        counts = (inputs["input_ids"] == core.config.audio_token_id).sum(1)
        _check_slots(int(counts.sum()), feats)
        per_prompt = feats.new_zeros(len(counts), int(counts.max()), feats.shape[-1])
        per_prompt[_first_rows(counts, per_prompt.shape[1])] = feats
        return {**inputs, AUDIO_EMBEDS: per_prompt}

    def prompt_embeds(self, core, inputs: dict[str, Tensor]) -> Tensor:
        """Token embeddings of ``inputs["input_ids"]`` with the audio features in their placeholder slots (the
        processor expanded them; :meth:`with_audio_embeds`'s if present); a count that does not match is an
        error, never a silent shift."""
        input_ids = inputs["input_ids"]
        embeds = core.get_input_embeddings()(input_ids)
        if "input_features" not in inputs:
            return embeds
        slots = input_ids == core.config.audio_token_id
        if AUDIO_EMBEDS in inputs:
            stored = inputs[AUDIO_EMBEDS]
            feats = stored[_first_rows(slots.sum(1), stored.shape[1])]
        else:
            feats = self.audio_features(core, inputs)
        _check_slots(int(slots.sum()), feats)
        return embeds.masked_scatter(slots.unsqueeze(-1).to(embeds.device), feats.to(embeds.device, embeds.dtype))

    def full_forward(self, core, inputs: dict[str, Tensor], attention_mask: Tensor) -> Tensor:
        """The family's own forward over whole sequences (prompt with audio + completion): last hidden
        states. The unshared reference path that the shared-prefix code must reproduce."""
        inputs = self.model_inputs(inputs)
        out = core(input_ids=inputs["input_ids"], attention_mask=attention_mask,
                   position_ids=self.position_ids(attention_mask), use_cache=False, **self.audio_inputs(inputs))
        return out.last_hidden_state

    # -- memory estimate --------------------------------------------------------------------------
    def arch(self, config) -> Arch:
        """The architecture numbers of a loaded config (a :mod:`r1aqa_pl.models.sizes` dataclass), for the memory
        estimate."""
        raise NotImplementedError


FAMILIES: Registry[PolicyFamily] = Registry("policy family", PolicyFamily, shared=True)
