"""``r1aqa prepare-mmau`` / ``prepare-mmar``: a benchmark's audio download laid out beside its question file.

Both benchmarks give audio paths relative to their question file (MMAU ``audio_id``
``./test-mini-audios/<id>.wav``, MMAR ``audio_path`` ``./audio/<id>.wav``). These commands put the
question file, unchanged, and its clips into one folder so the paths resolve, decode every record's
clip, and report what is missing (``report.json`` and the data card). An archive is unpacked only
after every member was checked: absolute paths, ``..``, links and device files, and members that
could not be written here (a name too long for the file system, a path that is a file in one member
and a folder in another or in the output), are refused before anything is written. Re-running skips
files already in place.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from r1aqa_pl.data.audio import audio_info, load_audio
from r1aqa_pl.data.card import source_entry, split_summary, write_card, write_text_atomic
from r1aqa_pl.task.files import read_records
from r1aqa_pl.task.question import DataError


def _safe_name(name: str) -> PurePosixPath | None:
    """``name`` as a relative path inside the output folder, or None when it would leave it."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or not p.parts or ":" in p.parts[0]:
        return None
    return PurePosixPath(*[part for part in p.parts if part != "."])


PART = ".part"  # a file is written under its name + PART, then renamed


def _write_atomic(src, dst: Path) -> None:
    part = dst.with_name(dst.name + PART)
    with open(part, "wb") as f:
        shutil.copyfileobj(src, f)
    os.replace(part, dst)


def _short(name: str) -> str:
    """A member name fit for a message: a 300-character name is shown by its two ends."""
    return name if len(name) <= 80 else f"{name[:60]}...{name[-12:]}"


def _unwritable(members: list, out: Path) -> tuple[str, str] | None:
    """(member name, why) for the first member that could not be written under ``out``, else None."""
    name_max, path_max = 255, 4096
    try:
        name_max, path_max = os.pathconf(out, "PC_NAME_MAX"), os.pathconf(out, "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows): the common limits
        pass
    files, folders = set(), set()
    for m in members:
        rel = _safe_name(m.name)
        if not rel or not rel.parts:
            continue
        dst = out / rel
        longest = max(len(os.fsencode(p)) for p in rel.parts)
        if longest + len(PART) > name_max:
            return m.name, (f"name too long ({longest} bytes in one part; the file system allows {name_max}, "
                            f"less {len(PART)} for the {PART!r} it is written under)")
        if len(os.fsencode(str(dst))) >= path_max:
            return m.name, f"path too long ({len(os.fsencode(str(dst)))} bytes; the file system allows {path_max})"
        (files if m.isfile() else folders).add(rel)
        folders.update(rel.parents)
        if m.isfile() and dst.is_dir():
            return m.name, f"a folder {dst} is in the way"
        if any(p.exists() and not p.is_dir() for p in dst.parents if out in p.parents):
            return m.name, f"a file on its path under {out} is in the way"
    clash = next((f for f in sorted(files) if f in folders), None)
    if clash is not None:
        name = next(m.name for m in members if m.isfile() and _safe_name(m.name) == clash)
        return name, "it is a file, and a folder of other members"
    return None


class _ZipMember:
    """A zip entry seen through the few ``tarfile.TarInfo`` methods the archive checks use."""

    def __init__(self, info: zipfile.ZipInfo):
        self.info, self.name, self.size = info, info.filename, info.file_size
        self.link = stat.S_ISLNK(info.external_attr >> 16)

    def isdir(self) -> bool:
        return self.info.is_dir()

    def isfile(self) -> bool:
        return not self.info.is_dir() and not self.link

    def issym(self) -> bool:
        return self.link

    def islnk(self) -> bool:
        return False


@contextlib.contextmanager
def _open_archive(archive: str | Path):
    """(members, open one member's bytes) of a zip or tar archive."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            yield [_ZipMember(i) for i in z.infolist()], lambda m: z.open(m.info)
    else:
        with tarfile.open(archive) as tar:
            yield tar.getmembers(), tar.extractfile


def unpack(archive: str | Path, out: str | Path) -> int:
    """Unpack a tar (``.tar``, ``.tar.gz``, ...) or zip archive into ``out``; returns the files written.

    Every member is checked first; an unsafe one (absolute path, ``..``, link, device) refuses the
    whole archive with DataError ``unsafe_archive_member``, one that could not be written here (name
    too long, file/folder clash) with ``bad_archive_member``. Files already there with the same size are kept.
    """
    out, written = Path(out), 0
    try:
        with _open_archive(archive) as (members, open_member):
            for m in members:
                top = m.isdir() and PurePosixPath(m.name) == PurePosixPath(".")  # a "./" entry
                if not top and (_safe_name(m.name) is None or not (m.isfile() or m.isdir())):
                    kind = ("a link" if m.issym() or m.islnk() else
                            "outside the output folder" if m.isfile() or m.isdir() else "not a regular file")
                    raise DataError(str(archive), m.name, "unsafe_archive_member",
                                    f"refused: member {m.name!r} is {kind}; nothing was unpacked")
            bad = _unwritable(members, out)
            if bad:
                name = _short(bad[0])
                raise DataError(str(archive), name, "bad_archive_member",
                                f"refused: member {name!r} cannot be unpacked: {bad[1]}; nothing was unpacked")
            for m in members:
                if not m.isfile():
                    continue
                dst = out / _safe_name(m.name)
                if dst.is_file() and dst.stat().st_size == m.size:
                    continue
                try:
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    with open_member(m) as src:
                        _write_atomic(src, dst)
                except OSError as e:  # the output's fault (disk full, permissions), unless the stream is damaged
                    if e.errno is None:  # BadGzipFile: the archive's
                        raise
                    raise DataError(str(dst), "file", "unwritable_output", f"cannot write member {_short(m.name)!r} "
                                    f"({e.strerror or e}) after {written} files were written") from None
                written += 1
    except (tarfile.TarError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as e:
        if isinstance(e, FileNotFoundError) and not Path(archive).is_file():
            raise DataError(str(archive), "file", "missing_file", "archive not found") from None
        raise DataError(str(archive), "file", "unreadable_archive", f"cannot read the archive ({e})") from None
    return written


def check_clips(records: list, key: str, base: Path) -> tuple[list[dict], list[dict], list[dict]]:
    """Decode each record's clip (``record[key]`` relative to ``base``): (usable records, problems, clip infos)."""
    from tqdm import tqdm

    usable, problems, infos = [], [], {}
    for i, rec in enumerate(tqdm(records, desc="check clips", unit="rec")):
        rid = rec.get("id") if isinstance(rec, dict) else None
        rel = rec.get(key) if isinstance(rec, dict) else None
        if not isinstance(rel, str) or _safe_name(rel) is None:
            problems.append(
                {
                    "id": rid,
                    "record": i,
                    "reason": "bad_field",
                    "message": f"record {i}: '{key}' must be a relative path inside the folder, got {rel!r}",
                }
            )
            continue
        path = base / _safe_name(rel)
        if str(path) not in infos:
            try:
                info = audio_info(path)
                load_audio(path, info["sample_rate"])  # full decode: corrupt or NaN samples show here
                infos[str(path)] = info
            except DataError as e:
                infos[str(path)] = e
        res = infos[str(path)]
        if isinstance(res, DataError):
            problems.append(
                {"id": rid, "record": i, key: rel, "reason": res.reason, "message": str(res).split(": ", 1)[1]}
            )
        else:
            usable.append(rec)
    return usable, problems, [v for v in infos.values() if isinstance(v, dict)]


def _copy_clips(records: list, key: str, audio: Path, out: Path) -> int:
    """Copy each record's clip from a download folder: ``audio/<path>`` or, when ``audio`` is the clips'
    own folder, ``audio/<file name>``. Returns the files copied."""
    copied = 0
    for rec in records:
        rel = _safe_name(rec.get(key) or "") if isinstance(rec, dict) and isinstance(rec.get(key), str) else None
        if rel is None:
            continue
        dst = out / rel
        src = next((p for p in (audio / rel, audio / rel.name) if p.is_file()), None)
        if src is None or (dst.is_file() and dst.stat().st_size == src.stat().st_size):
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(src, "rb") as f:
            _write_atomic(f, dst)
        copied += 1
    return copied


def _finish(
    name: str, command: str, records_file: Path, audio_source: Path, out: Path, key: str, domain_key: str, type_key: str
) -> int:
    """Copy the question file beside the audio, check every clip, write report and card; 0 when nothing is missing."""
    records = read_records(records_file)
    target = out / records_file.name
    if not (target.exists() and target.samefile(records_file)):
        shutil.copyfile(records_file, target)
    usable, problems, clips = check_clips(records, key, out)
    summary = split_summary(target.name, usable, problems, domain_key, type_key, clips)
    report = json.dumps({records_file.stem: problems}, indent=1, ensure_ascii=False) + "\n"
    write_text_atomic(out / "report.json", report)
    write_card(
        out,
        name,
        command,
        {records_file.stem: summary},
        [
            source_entry(records_file, "questions"),
            *([source_entry(audio_source, "audio archive")] if audio_source.is_file() else []),
        ],
    )
    print(
        f"{command}: {len(usable)} of {len(records)} records have their clip -> {target}; "
        f"missing: {summary['missing_by_reason'] or 'none'}; report: {out / 'report.json'}; "
        f"card: {out / 'data_card.md'}"
    )
    if problems:
        print(f"{command}: FAIL: {len(problems)} records without a usable clip, e.g. {problems[0]['message']}")
    return 1 if problems else 0


def prepare_mmau(*, archive: str, json: str, out: str) -> int:
    """MMAU: unpack the audio archive beside the question JSON and check every record's clip.

    Exits non-zero when a record's clip is missing or does not decode (a score on part of the
    benchmark is not comparable).

    Args:
        archive: the audio archive from the MMAU repository, e.g. test-mini-audios.tar.gz.
        json: the question file, e.g. mmau-test-mini.json (audio_id relative to its folder).
        out: output folder: the JSON (unchanged), the unpacked clips, report.json, data_card.json/.md.
    """
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"prepare-mmau: unpacked {unpack(archive, out_dir)} files from {archive}")
    return _finish("MMAU", "r1aqa prepare-mmau", Path(json), Path(archive), out_dir, "audio_id", "task", "sub-category")


def prepare_mmar(*, audio: str, meta: str, out: str) -> int:
    """MMAR: its clips (a download folder or a tar archive) beside MMAR-meta.jsonl, every record checked.

    Exits non-zero when a record's clip is missing or does not decode.

    Args:
        audio: the audio download: a folder holding ``audio/<id>.wav`` or the clips themselves, or a tar archive.
        meta: MMAR-meta.jsonl (audio_path relative to its folder).
        out: output folder: the JSONL (unchanged), the clips, report.json, data_card.json/.md.
    """
    out_dir, src = Path(out), Path(audio)
    out_dir.mkdir(parents=True, exist_ok=True)
    if src.is_file():
        print(f"prepare-mmar: unpacked {unpack(src, out_dir)} files from {src}")
    elif src.is_dir():
        print(
            f"prepare-mmar: copied {_copy_clips(read_records(Path(meta)), 'audio_path', src, out_dir)} clips from {src}"
        )
    else:
        raise DataError(str(src), "file", "missing_file", "audio folder or archive not found")
    return _finish("MMAR", "r1aqa prepare-mmar", Path(meta), src, out_dir, "audio_path", "modality", "category")
