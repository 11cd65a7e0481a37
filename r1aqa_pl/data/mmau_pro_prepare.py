"""``r1aqa prepare-mmau-pro``: MMAU-Pro's release laid out as the project reads it, every clip checked.

The release is ``test.parquet`` (one row per question; ``audio_path`` a list of paths such as
``data/<name>.wav``) and ``data.zip`` (about 47 GB), whose members are those paths. This command writes the
parquet's rows, every column kept, as ``mmau-pro.jsonl`` in the output folder; unpacks the archive (zip or
tar) beside it, or copies the clips from a folder, so that every ``audio_path`` entry resolves; decodes every
clip of every question; and writes ``report.json`` (the questions missing a clip, by reason) and the data card.
Archive members are checked before anything is written, as ``prepare-mmau`` checks its tar archive:
absolute paths, ``..``, links, and members that could not be written here refuse the whole archive.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from r1aqa_pl.benchmarks.mmau_pro import part_of, read_release, write_jsonl
from r1aqa_pl.data.benchmark_audio import _copy_clips, _safe_name, check_clips, unpack
from r1aqa_pl.data.card import source_entry, split_summary, write_card, write_text_atomic
from r1aqa_pl.task.question import DataError

FILE = "mmau-pro.jsonl"
COMMAND = "r1aqa prepare-mmau-pro"


def clip_list(rec: dict) -> list[str] | None:
    """A record's clips as relative paths inside the folder, or None when ``audio_path`` is not such a list."""
    clips = rec.get("audio_path") if isinstance(rec, dict) else None
    clips = [clips] if isinstance(clips, str) else clips
    if not isinstance(clips, list) or not clips or not all(isinstance(c, str) and _safe_name(c) for c in clips):
        return None
    return clips


def check_clip_lists(records: list, base: Path) -> tuple[list[dict], list[dict], list[dict]]:
    """Decode every clip of every record: (usable records, one problem per record missing a clip, clip infos).
    A question is usable only with all its clips: it is asked over all of them, in order."""
    flat, problems = [], {}
    for i, rec in enumerate(records):
        clips = clip_list(rec)
        if clips is None:
            problems[i] = {"id": rec.get("id") if isinstance(rec, dict) else None, "record": i, "reason": "bad_field",
                           "message": f"record {i}: 'audio_path' must be a non-empty list of relative paths inside "
                                      f"the folder, got {rec.get('audio_path') if isinstance(rec, dict) else rec!r}"}
            continue
        flat += [{"id": rec.get("id"), "record": i, "clip": c} for c in clips]
    _, clip_problems, infos = check_clips(flat, "clip", base)
    for p in clip_problems:
        i = flat[p["record"]]["record"]
        problems.setdefault(i, {"id": p["id"], "record": i, "audio_path": p["clip"], "reason": p["reason"],
                                "message": f"record {i}: clip {p['clip']!r}: {p['message']}"})
    usable = [r for i, r in enumerate(records) if i not in problems]
    return usable, [problems[i] for i in sorted(problems)], infos


def prepare_mmau_pro(*, parquet: str, audio: str, out: str) -> int:
    """MMAU-Pro: test.parquet as the project's JSON lines, its clips beside it, every question's clips checked.

    Exits non-zero when a question misses a clip or one does not decode (a score on part of the
    benchmark is not comparable); a parquet without MMAU-Pro's columns stops before anything is unpacked.

    Args:
        parquet: the release's test.parquet.
        audio: the clips: data.zip (or a tar archive), or a folder holding ``data/<name>.wav`` or the clips.
        out: output folder: mmau-pro.jsonl, the clips (``data/...``), report.json, data_card.json/.md.
    """
    out_dir, src = Path(out), Path(audio)
    records = read_release(parquet)
    out_dir.mkdir(parents=True, exist_ok=True)
    if src.is_file():
        n = unpack(src, out_dir)
        print(f"prepare-mmau-pro: unpacked {n} files from {src}")
    elif src.is_dir():
        flat = [{"clip": c} for r in records for c in clip_list(r) or []]
        print(f"prepare-mmau-pro: copied {_copy_clips(flat, 'clip', src, out_dir)} clips from {src}")
    else:
        raise DataError(str(src), "file", "missing_file", "audio archive or folder not found")
    target = write_jsonl(records, out_dir / FILE)
    usable, problems, clips = check_clip_lists(records, out_dir)
    summary = split_summary(target.name, usable, problems, "category", "category", clips)
    summary["question_types"] = dict(Counter(part_of(r.get("category")) for r in usable).most_common())
    write_text_atomic(out_dir / "report.json", json.dumps({"test": problems}, indent=1, ensure_ascii=False) + "\n")
    sources = [source_entry(parquet, "questions"), *([source_entry(src, "audio archive")] if src.is_file() else [])]
    write_card(out_dir, "MMAU-Pro", COMMAND, {"test": summary}, sources)
    several = sum(len(clip_list(r) or []) > 1 for r in usable)
    print(f"{COMMAND}: {len(usable)} of {len(records)} questions have all their clips ({several} over several "
          f"clips) -> {target}; missing: {summary['missing_by_reason'] or 'none'}; report: {out_dir / 'report.json'}; "
          f"card: {out_dir / 'data_card.md'}")
    if problems:
        print(f"{COMMAND}: FAIL: {len(problems)} questions without all their clips, e.g. {problems[0]['message']}")
    return 1 if problems else 0
