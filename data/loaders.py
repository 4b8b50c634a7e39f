"""Load training traces into :class:`Record` from the hub, local files or chat-formatted responses.

Every source goes through one field mapping (``fields``: our key -> the source's key), so GAIR/LIMO
(`question`, `solution`, `answer`), a local jsonl, or a parquet export all yield the same records.
Chat-formatted traces (``chat: true``, e.g. R1 responses ``<｜User｜>...<｜Assistant｜><think>\\n...
</think>...``) are split into the thinking trace and the final answer; those cut off before
``</think>`` are flagged ``meta["truncated"]``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

from .records import LoadReport, Record, RecordError, validated

# Field mappings of known hub datasets: our key -> the dataset's column.
HUB_FIELDS: dict[str, dict[str, str]] = {
    "GAIR/LIMO": {"question": "question", "trace": "solution", "answer": "answer"},
}
DEFAULT_FIELDS = {"id": "id", "question": "question", "trace": "trace", "answer": "answer", "completion": "completion"}
CHAT_FIELDS = {"id": "question_id", "question": "question", "response": "full_response"}

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in text, nested braces included."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None  # unbalanced: the box was cut off


_ANSWER_LINE = re.compile(r"\*{0,2}(?:final answer|answer)\*{0,2}\s*[:：]\s*\**\s*(.+)", re.IGNORECASE)


def parse_chat_response(response: str, where: str = "record") -> dict[str, Any]:
    """Split a chat-formatted response into prompt, thinking trace, completion (the exact text after
    the trace: ``</think>`` and the final part), final text and answer.

    The answer is the last ``\\boxed{}`` of the final text, else an ``Answer: X`` line, else None.
    """
    open_at = response.find(THINK_OPEN)
    if open_at < 0:
        raise RecordError(f"{where}: field 'response' has no '{THINK_OPEN}' tag; it is not a reasoning trace",
                          reason="no <think> in response")
    start = open_at + len(THINK_OPEN)
    if response.startswith("\n", start):
        start += 1
    close_at = response.find(THINK_CLOSE, start)
    truncated = close_at < 0
    trace = (response[start:] if truncated else response[start:close_at]).rstrip()
    final = "" if truncated else response[close_at + len(THINK_CLOSE) :].strip()
    answer = last_boxed(final) if final else None
    if answer is None and final:
        lines = _ANSWER_LINE.findall(final)
        answer = lines[-1].strip().strip("*").strip() if lines else None
    completion = "" if truncated else response[start + len(trace):].rstrip()
    return {"prompt": response[:open_at], "trace": trace, "completion": completion, "final": final,
            "answer": answer or None, "truncated": truncated}


def jsonl_rows(path: str | Path) -> Iterator[tuple[str, dict[str, Any] | RecordError]]:
    """``(where, row or error)`` for every non-blank line of a jsonl file: a line that is not UTF-8, not
    JSON or not an object becomes a RecordError naming the file and line (the caller raises or skips)."""
    with Path(path).open("rb") as f:  # splits on "\n" only: U+2028 may sit inside strings
        for n, raw in enumerate(f, 1):
            where = f"{path} line {n}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield where, RecordError(f"{where}: not UTF-8 text (byte {raw[err.start]:#04x} at column {err.start}); "
                                         f"re-encode the file as UTF-8 (e.g. iconv -t utf-8)", reason="not UTF-8")
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                yield where, RecordError(f"{where}: not valid JSON ({err.msg}); fix or remove that line",
                                         reason="not valid JSON")
                continue
            yield where, row if isinstance(row, dict) else _not_object(where, row)


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Rows of a jsonl file that must be whole (benchmarks, stored runs): the first bad line raises."""
    for _, row in jsonl_rows(path):
        if isinstance(row, RecordError):
            raise row
        yield row


def _not_object(where: str, row) -> RecordError:
    return RecordError(f"{where}: a {type(row).__name__}, not a JSON object of fields", reason="not a JSON object")


def _read_rows(source: str, split: str) -> Iterator[tuple[str, dict[str, Any] | RecordError]]:
    """``(where, row or error)`` for every row of a .jsonl / .json / .parquet file or a hub dataset."""
    path = Path(source)
    if path.suffix == ".jsonl":
        yield from jsonl_rows(path)
        return
    if path.suffix == ".json":
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as err:
            raise ValueError(f"{source}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); "
                             f"re-encode the file as UTF-8") from err
        except json.JSONDecodeError as err:
            raise ValueError(f"{source}: not valid JSON ({err.msg}, line {err.lineno}); a .json file is read whole, "
                             f"so fix it or use .jsonl, where a bad line can be skipped") from err
        if isinstance(rows, dict):  # {"data": [...]} or {"train": [...]}
            rows = rows.get(split) or rows.get("data") or next(iter(rows.values()))
    elif path.suffix == ".parquet":
        import datasets

        rows = datasets.Dataset.from_parquet(str(path))
    elif path.exists():
        raise ValueError(f"{source}: unknown file type {path.suffix!r}; use .jsonl, .json or .parquet")
    else:  # a hub dataset by name
        import datasets

        rows = datasets.load_dataset(source, split=split)
    for i, row in enumerate(rows):
        where = f"{source} record {i}"
        yield where, row if isinstance(row, dict) else _not_object(where, row)


def _text(row: dict, key: str, where: str, numbers: bool = False) -> str | None:
    """Field ``key`` as text: strings as they are; numbers only where ``numbers`` (answers, ids: AMC stores
    27.0, which becomes "27.0" and is graded as a number); anything else is refused, never str()-ed."""
    value = row.get(key)
    if value is None or isinstance(value, str):
        return value
    if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise RecordError(f"{where}: field '{key}' is a {type(value).__name__}, not text; map a text column with "
                      f"`fields`, or fix the source", reason=f"'{key}' is not text")


def iter_records(source: str, fields: dict[str, str] | None = None, split: str = "train", chat: bool = False,
                 name: str | None = None) -> Iterator[tuple[str, Record | RecordError]]:
    """Yield ``(where, record or error)`` for every row; validation happens in :func:`load_records`."""
    mapping = {**(CHAT_FIELDS if chat else DEFAULT_FIELDS), **HUB_FIELDS.get(source, {}), **(fields or {})}
    name = name or Path(source).stem
    for i, (where, row) in enumerate(_read_rows(source, split)):
        if isinstance(row, RecordError):
            yield where, row
            continue
        try:
            rid = _text(row, mapping["id"], where, numbers=True)
            rid = f"{name}-{i}" if rid is None or rid == "" else rid
            where = f"{where} (id {rid})"
            meta = {k: v for k, v in row.items() if k not in mapping.values() and isinstance(v, (str, int, float, bool))}
            if isinstance(row.get("meta"), dict):  # records written by write_jsonl round-trip their metadata
                meta.update(row["meta"])
            if chat:
                response = _text(row, mapping["response"], where)
                if response is None or not response.strip():
                    raise RecordError(f"{where}: field '{mapping['response']}' is missing or empty",
                                      reason=f"missing or empty '{mapping['response']}'")
                parsed = parse_chat_response(response, where)
                question = _text(row, mapping["question"], where)
                if question is None and "<｜User｜>" in parsed["prompt"]:
                    question = parsed["prompt"].split("<｜User｜>", 1)[1].split("<｜Assistant｜>", 1)[0]
                meta.update(truncated=parsed["truncated"])
                rec = Record(rid, question, parsed["trace"], parsed["answer"], name, meta, parsed["completion"])
            else:
                values = {k: _text(row, mapping[k], where, numbers=k == "answer")
                          for k in ("question", "trace", "answer", "completion")}
                rec = Record(rid, values["question"], values["trace"], values["answer"], name, meta,
                             values["completion"] or "")
        except RecordError as err:
            yield where, err
            continue
        yield where, rec


def load_records(source: str, fields: dict[str, str] | None = None, split: str = "train", chat: bool = False,
                 on_bad: str = "raise", require_answer: bool | None = None, limit: int | None = None,
                 name: str | None = None) -> tuple[list[Record], LoadReport]:
    """Load and validate records; returns them with a report of what was skipped and why.

    ``require_answer`` defaults to True, and to False for chat traces (truncated ones have none;
    the attribution step reports them per record instead).
    """
    report = LoadReport(source)
    require = (not chat) if require_answer is None else require_answer
    out: list[Record] = []
    for rec in validated(iter_records(source, fields, split, chat, name), report, on_bad, require):
        out.append(rec)
        if limit is not None and len(out) >= limit:
            break
    return out, report


def load_trace_records(traces) -> tuple[list[Record], LoadReport]:
    """The records a recipe's traces section (common.config.TracesArguments) names, with the load report."""
    records, report = load_records(traces.traces, fields=traces.traces_fields, split=traces.traces_split,
                                   chat=traces.traces_chat, on_bad=traces.on_bad, limit=traces.traces_limit)
    print(report.summary())
    return records, report
