"""The data card: what a prepared set holds, written beside it and shown by ``r1aqa check-data``.

A card says, per split, how many records the source had and how many are usable, the clips missing
by reason, counts per domain and per question type, clip durations and sample rates, and which
source files (with their sha256) it was made from -- so two people can tell whether they trained or
scored on the same data. It holds no dates or absolute paths: preparing the same downloads twice
gives byte-identical cards.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

CARD_JSON, CARD_TEXT = "data_card.json", "data_card.md"


def sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary name beside ``path``, then rename: an interrupted run never leaves a
    half-written file under the final name for a later run (or reader) to trust."""
    p = Path(path)
    part = p.with_name(p.name + ".part")
    part.write_text(text, encoding="utf-8")
    os.replace(part, p)


def source_entry(path: str | Path, role: str) -> dict:
    """A source file by name, size and checksum (no absolute path: the card must not depend on where it lies)."""
    p = Path(path)
    return {"role": role, "file": p.name, "bytes": p.stat().st_size, "sha256": sha256(p)}


def split_summary(file: str, usable: list[dict], problems: list[dict], domain_key: str, type_key: str,
                  clips: list[dict], default_domain: str = "") -> dict:
    """One split's counts.

    Args:
        file: the prepared file's name (relative to the card).
        usable: the records whose clip is there and decodes.
        problems: one dict per record left without audio, with at least ``reason``.
        domain_key, type_key: the record fields counted as domain and question type.
        clips: one dict per distinct usable clip with ``seconds`` and ``sample_rate``.
        default_domain: the domain of a record without ``domain_key`` (AVQA: "sound").
    """
    seconds = [c["seconds"] for c in clips]
    audio = {
        "clips": len(clips),
        "sample_rates": {str(r): n for r, n in sorted(Counter(c["sample_rate"] for c in clips).items())},
    }
    if seconds:
        audio["seconds"] = {
            "min": round(min(seconds), 3),
            "mean": round(sum(seconds) / len(seconds), 3),
            "max": round(max(seconds), 3),
            "total": round(sum(seconds), 3),
        }
    return {
        "file": file,
        "records": len(usable) + len(problems),
        "usable": len(usable),
        "missing_by_reason": dict(sorted(Counter(p["reason"] for p in problems).items())),
        "domains": _counts(str(r.get(domain_key) or default_domain) for r in usable),
        "question_types": _counts(str(r.get(type_key) or "") for r in usable),
        "audio": audio,
    }


def _counts(values) -> dict:
    return dict(sorted(Counter(values).items(), key=lambda kv: (-kv[1], kv[0])))


def write_card(
    out_dir: str | Path,
    dataset: str,
    command: str,
    splits: dict[str, dict],
    sources: list[dict],
    extra: dict | None = None,
) -> dict:
    """Write ``data_card.json`` and its readable form ``data_card.md`` into ``out_dir``; returns the card."""
    card = {"dataset": dataset, "prepared_by": command, **(extra or {}), "splits": splits, "sources": sources}
    out = Path(out_dir)
    write_text_atomic(out / CARD_JSON, json.dumps(card, indent=2) + "\n")
    write_text_atomic(out / CARD_TEXT, format_card(card))
    return card


def format_card(card: dict) -> str:
    """The card as a few lines of Markdown."""
    extra = {k: v for k, v in card.items() if k not in ("dataset", "prepared_by", "splits", "sources")}
    lines = [
        f"# Data card: {card['dataset']}",
        "",
        f"Prepared by `{card['prepared_by']}`" + "".join(f"; {k} {v}" for k, v in extra.items()) + ".",
        "",
    ]
    for name, s in card["splits"].items():
        missing = sum(s["missing_by_reason"].values())
        lines += [
            f"## {name}: {s['file']}",
            "",
            f"- records: {s['records']}; usable: {s['usable']}; without audio: {missing}"
            + (" (" + ", ".join(f"{r} {n}" for r, n in s["missing_by_reason"].items()) + ")" if missing else ""),
            "- domains: " + (", ".join(f"{d} {n}" for d, n in s["domains"].items()) or "-"),
            "- question types: " + (", ".join(f"{t or '(none)'} {n}" for t, n in s["question_types"].items()) or "-"),
        ]
        a = s["audio"]
        if a["clips"]:
            sec = a["seconds"]
            lines.append(
                f"- audio: {a['clips']} clips, {sec['min']} / {sec['mean']} / {sec['max']} s (min / mean / max), "
                f"total {sec['total']} s ({sec['total'] / 3600:.2f} h); sample rates: "
                + ", ".join(f"{r} Hz x{n}" for r, n in a["sample_rates"].items())
            )
        else:
            lines.append("- audio: none")
        lines.append("")
    lines += ["## Sources", ""] + [
        f"- {s['role']}: `{s['file']}`, {s['bytes']} bytes, sha256 `{s['sha256']}`" for s in card["sources"]
    ]
    return "\n".join(lines) + "\n"


def find_card(data_file: str | Path) -> dict | None:
    """The card beside ``data_file`` when it describes that file, else None."""
    p = Path(data_file)
    path = p.parent / CARD_JSON
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    files = {s.get("file") for s in card.get("splits", {}).values()} if isinstance(card, dict) else set()
    return card if p.name in files else None


def show_card(data_file: str | Path) -> bool:
    """Print the card of ``data_file`` (indented, for ``check-data``); False when there is none."""
    card = find_card(data_file)
    if card is None:
        return False
    print(f"  data card ({Path(data_file).parent / CARD_JSON}):")
    for line in format_card(card).splitlines():
        if line:
            print("    " + line)
    return True
