"""Prompt files: one caption a line (.txt) or JSON lines with a ``caption`` field (.jsonl), and the paper's sets.

Reading is forgiving where files differ harmlessly (UTF-8 with or without a byte-order mark, CRLF, a
missing final newline, blank lines) and strict where data would be lost (invalid UTF-8 or JSON, a
record without a caption, no prompts at all): those raise :class:`PromptFileError` with the fix.
HTML tags and quotes inside captions are kept verbatim.
"""
from __future__ import annotations

import json
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import paths

# The paper's prompt sets as published beside its official code
# (github.com/Dongjae0324/sharpness_memorization_diffusion)
SD_PROMPT_FILES = ("sd1_mem.txt", "sd1_mem.jsonl", "sd1_nmem.txt", "sd2_mem.txt", "sd2_mem.jsonl", "sd2_nmem.txt",
                   "sample_mitigation.txt")
SD_PROMPTS_URL = "https://raw.githubusercontent.com/Dongjae0324/sharpness_memorization_diffusion/main/prompts/{name}"


class PromptFileError(ValueError):
    """A prompt file that cannot be read; the message names the file and the fix."""


@dataclass
class PromptSet:
    prompts: list[str]
    records: list[dict] = field(default_factory=list)  # the full JSON records for .jsonl files
    duplicates: dict[str, int] = field(default_factory=dict)  # prompt -> count (> 1)
    path: Path | None = None


def read_prompts(path: str | Path, field_name: str = "caption") -> PromptSet:
    """Read a prompt file (.txt: a caption a line; .jsonl/.json: one JSON object a line with ``field_name``)."""
    path = Path(path)
    fix = "give a UTF-8 text file with one caption a line, or JSON lines with a 'caption' field"
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, PermissionError, OSError) as e:
        raise PromptFileError(f"{path}: cannot read it ({type(e).__name__}); {fix}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise PromptFileError(f"{path}: not UTF-8 (byte {e.start}); re-save it as UTF-8") from None
    prompts, records = [], []
    jsonl = path.suffix.lower() in (".jsonl", ".json")
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if jsonl:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise PromptFileError(f"{path}:{lineno}: invalid JSON ({e.msg}); {fix}") from None
            if not isinstance(rec, dict) or not isinstance(rec.get(field_name), str):
                raise PromptFileError(f"{path}:{lineno}: no string field {field_name!r}; {fix}")
            records.append(rec)
            prompts.append(rec[field_name].strip())
        else:
            prompts.append(line.strip())
    if not prompts:
        raise PromptFileError(f"{path}: contains no prompts; {fix}")
    dup = {p: c for p, c in Counter(prompts).items() if c > 1}
    return PromptSet(prompts, records, dup, path)


def sd_prompt_file(name: str) -> Path:
    """Path of one of the paper's SD prompt files (see :func:`sharp_utils.paths.sd_prompts_dir`)."""
    p = paths.sd_prompts_dir() / name
    if not p.is_file():
        raise PromptFileError(f"{p}: missing; run `sharp prompts download` (needs network) or set $SHARP_SD_PROMPTS")
    return p


def download_sd_prompts(
    dest: str | Path | None = None, names=SD_PROMPT_FILES, timeout: float = 30.0, log=print
) -> Path:
    """Fetch the paper's public SD prompt sets into ``dest`` (default ``prompts/sd``); files already there are kept."""
    dest = Path(dest) if dest else paths.PROMPTS / "sd"
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        target = dest / name
        if target.is_file():
            log(f"kept {target}")
            continue
        url = SD_PROMPTS_URL.format(name=name)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                data = r.read()
        except OSError as e:
            raise PromptFileError(
                f"could not fetch {url} ({e}); check the network or copy the files into {dest}"
            ) from None
        tmp = target.with_suffix(target.suffix + ".part")
        tmp.write_bytes(data)
        tmp.replace(target)
        log(f"wrote {target} ({len(data)} bytes)")
    return dest


MEMORIZED = ("em", "pm", "mem")  # the memorized categories of MiniSD's (em / pm) and the paper's (mem) sets


def pick(records: list[dict], per_category: int | None, seed: int = 0, categories=None) -> list[dict]:
    """At most ``per_category`` records of each category, chosen with a fixed seed (order kept)."""
    rng = np.random.default_rng(seed)
    cats = categories or sorted({r["category"] for r in records}, key=lambda c: ("em", "pm", "mem", "nmem").index(c))
    keep = []
    for c in cats:
        idx = [i for i, r in enumerate(records) if r["category"] == c]
        if per_category is not None and len(idx) > per_category:
            idx = sorted(rng.choice(idx, per_category, replace=False).tolist())
        keep += idx
    return [records[i] for i in sorted(keep)]

