"""The phrases a description is read in: clauses, the things they point at (files, URLs,
tables) and the conditions, field changes and aggregations they state, turned into the
expression language's syntax. Text in, text out: which plugin gets them is
generator.py's business."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

URL = re.compile(r"https?://[^\s'\"<>,]+[^\s'\"<>,.;:)]")
FILE = re.compile(
    r"(?<![\w/.:-])((?:[\w-]+/)*[\w-]+\.(csv|jsonl|ndjson|json|tsv|txt|xml|parquet))\b"
)
QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
NUMBER = r"-?\d+(?:\.\d+)?"
DATABASE = ("postgres", "postgresql", "database", "sql", "table", "db", "mysql", "query")
EXTENSION_FORMAT = {"ndjson": "jsonl", "jsonl": "jsonl", "json": "json", "csv": "csv"}

READ_VERBS = ("read", "load", "fetch", "get", "import", "pull", "ingest", "download",
              "take", "open", "parse", "query", "start", "consume", "grab")  # fmt: skip
WRITE_VERBS = ("write", "save", "store", "export", "send", "post", "push", "deliver",
               "upload", "output", "append", "dump", "put", "publish", "notify", "emit",
               "forward")  # fmt: skip
FILTER_WORDS = ("where", "only", "keep", "filter", "exclude", "skip", "discard", "ignore",
                "without", "select", "whose", "having", "drop", "remove")  # fmt: skip
NEGATING = ("exclude", "skip", "discard", "ignore", "without", "drop", "remove")
TRANSFORM_WORDS = ("rename", "add", "compute", "calculate", "derive", "set", "convert",
                   "lowercase", "uppercase", "round", "trim", "strip", "drop", "remove",
                   "delete", "make", "lower", "upper", "capitalize")  # fmt: skip
AGGREGATE_WORDS = ("group", "aggregate", "count", "sum", "total", "totals", "average",
                   "avg", "mean", "summarise", "summarize", "number", "max", "maximum",
                   "min", "minimum", "highest", "lowest", "largest", "smallest", "tally",
                   "how")  # fmt: skip
ACTIONS = frozenset(READ_VERBS + WRITE_VERBS + FILTER_WORDS + TRANSFORM_WORDS + AGGREGATE_WORDS)


def split_clauses(text: str, extra_verbs: frozenset[str] = frozenset()) -> list[str]:
    """The description's clauses, in order. Sentences, ';' and 'then' always split;
    ',' and 'and' split only before an action word (so `amount > 1 and status = 'x'`
    and `by customer and region` stay whole); 'where' starts a clause of its own."""
    protected: list[str] = []
    # NUL marks the hidden pieces below: one in the text itself would never be restored,
    # and the restoring loop would not end (a request that hung its worker thread).
    text = text.replace("\x00", " ")

    def hide(match: re.Match[str]) -> str:
        protected.append(match.group(0))
        return f"\x00{len(protected) - 1}\x00"

    masked = QUOTED.sub(hide, text)
    masked = URL.sub(hide, masked)
    masked = FILE.sub(hide, masked)
    masked = re.sub(rf"(?<![\w\x00.]){NUMBER}(?![\w\x00])", hide, masked)
    actions = "|".join(sorted(ACTIONS | extra_verbs))
    parts = re.split(r"[.;!?]+(?:\s+|$)|\n+|\bthen\b|\bafterwards\b|\bfinally\b", masked)
    clauses: list[str] = []
    for part in parts:
        pieces = re.split(rf"(?:,\s*(?:and\s+|then\s+)?|\s+and\s+)(?=(?:{actions})\b)", part)
        for i, piece in enumerate(pieces):
            if i + 1 < len(pieces) and piece.strip().lower() in AGGREGATE_WORDS:
                pieces[i + 1] = f"{piece} and {pieces[i + 1]}"  # "total and average x"
                continue
            where = re.split(r"\s+(?=where\b)", piece)
            if lead(where[0]) in FILTER_WORDS:  # "skip rows where ...": one filter
                clauses.append(piece)
            else:
                clauses.extend(where)
    out = []
    for clause in clauses:
        restored = clause
        while "\x00" in restored:  # a hidden piece may hold another (a URL's number)
            restored = re.sub(r"\x00(\d+)\x00", lambda m: protected[int(m.group(1))], restored)
        restored = restored.strip(" ,")
        restored = re.sub(r"^(?:and|then|also|finally|next|first|lastly)\s+", "", restored)
        if restored and re.search(r"\w", restored):
            out.append(restored)
    return out


def lead(clause: str) -> str:
    """The clause's first word, lower case."""
    found = re.match(r"\s*([A-Za-z]+)", clause)
    return found.group(1).lower() if found else ""


@dataclass(frozen=True)
class Target:
    kind: str  # file, url, database
    text: str
    extension: str | None = None
    table: str | None = None


def targets_of(clause: str) -> list[Target]:
    """Every file and URL a clause names (`read a.csv and b.csv`), or its one table."""
    found = [Target("url", m.group(0)) for m in URL.finditer(clause)]
    masked = URL.sub(" ", clause)
    found += [Target("file", m.group(1), m.group(2).lower()) for m in FILE.finditer(masked)]
    if found:
        return found
    one = target_of(clause)
    return [one] if one is not None else []


def target_of(clause: str) -> Target | None:
    if url := URL.search(clause):
        return Target("url", url.group(0))
    if file := FILE.search(clause):
        return Target("file", file.group(1), file.group(2).lower())
    lowered = clause.lower()
    if any(re.search(rf"\b{w}\b", lowered) for w in DATABASE):
        table = re.search(
            r"\btable\s+(?!(?:from|in|of|into|to|and|on|at)\b)[\"']?([A-Za-z_][\w.]*)", clause
        )
        if table is None:
            table = re.search(r"\b([A-Za-z_]\w*)\s+table\b", clause)
        name = table.group(1) if table else None
        return Target("database", clause, table=name if name not in ("the", "a") else None)
    return None


# --- conditions --------------------------------------------------------------------------


def _either(*spellings: str) -> str:
    return "|".join(s.replace(" ", r"\s+") for s in spellings)


# Order matters: the longer spellings first, and plain `is` (==) last.
_OPERATORS = [
    (_either(">=", "=>", "is greater than or equal to", "greater than or equal to",
             "is at least", "at least", "no less than"), ">="),
    (_either("<=", "=<", "is less than or equal to", "less than or equal to", "is at most",
             "at most", "no more than"), "<="),
    (_either("!=", "<>", "is not equal to", "not equal to", "does not equal", "is not",
             "isn't"), "!="),
    (_either(">", "is greater than", "greater than", "is more than", "more than", "is over",
             "over", "is above", "above", "exceeds", "bigger than", "larger than",
             "is after", "after"), ">"),
    (_either("<", "is less than", "less than", "fewer than", "is under", "under",
             "is below", "below", "smaller than", "is before", "before"), "<"),
    (_either("==", "=", "equals", "is equal to", "equal to", "is", "are"), "=="),
]  # fmt: skip
_SPECIAL = [
    (r"(?:is\s+)?(?:empty|null|missing|blank)", "{f} == null"),
    (r"(?:is\s+)?(?:not\s+(?:empty|null|missing|blank)|set|present)|exists", "{f} != null"),
    (r"contains\s+(?P<v>.+)", "{v} in {f}"),
    (r"starts\s+with\s+(?P<v>.+)", "startswith({f}, {v})"),
    (r"ends\s+with\s+(?P<v>.+)", "endswith({f}, {v})"),
    (r"(?:is\s+)?(?:one\s+of|in)\s+(?P<v>.+)", "{f} in [{vs}]"),
]
FIELD = r"(?P<f>[A-Za-z_][\w]*|field\(\"[^\"]+\"\))"


def literal(text: str) -> str:
    """A value as the expression language writes it: numbers and true/false/null as
    they are, quoted text re-quoted, anything else a string."""
    text = text.strip().rstrip(".")
    if re.fullmatch(NUMBER, text):
        return text
    if text.lower() in ("true", "false", "null"):
        return text.lower()
    if QUOTED.fullmatch(text):
        return json.dumps(text[1:-1])
    return json.dumps(re.sub(r"^(?:the|a|an)\s+", "", text, flags=re.I))


def condition(text: str) -> str | None:
    """`amount over 100 and status is paid` -> `amount > 100 and status == "paid"`;
    None when a part is not a comparison it knows."""
    parts = re.split(
        r"\s+(and|or)\s+(?=(?:the\s+)?[A-Za-z_]\w*\s+(?:[!<>=]|is\b|are\b|not\b|contains|starts|ends|equals|in\b|greater|less|more|over|above|under|below|exceeds|at\b|after|before|fewer|no\b|exists|bigger|larger|smaller))",
        text.strip(),
    )
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 1:
            out.append(part)
            continue
        atom = _comparison(part)
        if atom is None:
            return None
        out.append(atom)
    return " ".join(out)


def _comparison(text: str) -> str | None:
    text = re.sub(r"^(?:the|a|an)\s+", "", text.strip(), flags=re.I).rstrip(".")
    text = re.sub(r"^(?:field|column)\s+", "", text, flags=re.I)
    for pattern, template in _SPECIAL:
        found = re.fullmatch(rf"{FIELD}\s+{pattern}", text, flags=re.I)
        if found:
            value = found.groupdict().get("v") or ""
            items = ", ".join(
                literal(v)
                for v in re.split(r"\s*,\s*|\s+or\s+|\s+and\s+", value.strip("()[] "))
                if v
            )
            return template.format(f=found["f"], v=literal(value) if value else "", vs=items)
    for pattern, operator in _OPERATORS:
        found = re.fullmatch(rf"{FIELD}\s*(?:{pattern})\s*(?P<v>.+)", text, flags=re.I)
        if found:
            return f"{found['f']} {operator} {literal(found['v'])}"
    return None


# --- field changes -------------------------------------------------------------------------


def field_list(text: str) -> list[str]:
    """`a, b and c` -> [a, b, c] (identifiers only; filler words dropped)."""
    names = []
    for part in re.split(r"\s*,\s*|\s+and\s+|\s+or\s+", text.strip()):
        part = re.sub(r"^(?:the|a|an|fields?|columns?)\s+", "", part.strip(), flags=re.I)
        part = re.sub(r"\s+(?:fields?|columns?)$", "", part, flags=re.I).strip("'\"` ")
        if re.fullmatch(r"[A-Za-z_][\w]*", part) and part.lower() not in ("field", "fields"):
            names.append(part)
    return names


def transform(clause: str) -> tuple[dict[str, str], list[str]] | None:
    """(fields -> expression, fields to drop) a clause asks for, or None."""
    text = clause.strip().rstrip(".")
    f = r"(?:the\s+)?(?:field\s+|column\s+)?"
    if m := re.fullmatch(rf"rename\s+{f}(\w+)\s+(?:to|as|into)\s+(\w+)", text, re.I):
        return {m[2]: m[1]}, [m[1]]
    if m := re.fullmatch(
        rf"(?:add|compute|calculate|derive|set|make)\s+(?:a\s+|an\s+|new\s+)*{f}(\w+)\s*(?:=|as|to|from|equal\s+to)\s+(.+)",
        text,
        re.I,
    ):
        return {m[1]: m[2].strip()}, []
    if m := re.fullmatch(rf"(?:lowercase|lower-case|lower)\s+{f}(\w+)", text, re.I):
        return {m[1]: f"lower({m[1]})"}, []
    if m := re.fullmatch(rf"(?:uppercase|upper-case|upper)\s+{f}(\w+)", text, re.I):
        return {m[1]: f"upper({m[1]})"}, []
    if m := re.fullmatch(rf"(?:trim|strip)\s+{f}(\w+)", text, re.I):
        return {m[1]: f"strip({m[1]})"}, []
    if m := re.fullmatch(
        rf"round\s+{f}(\w+)(?:\s+to\s+(\d+)\s+(?:decimals?|digits?|places?|decimal\s+places?))?",
        text,
        re.I,
    ):
        return {m[1]: f"round({m[1]}, {m[2]})" if m[2] else f"round({m[1]})"}, []
    if m := re.fullmatch(
        r"(?:drop|remove|delete)\s+(?:the\s+)?(?:fields?|columns?)\s+(.+)", text, re.I
    ):
        names = field_list(m[1])
        return ({}, names) if names else None
    if m := re.fullmatch(
        r"(?:drop|remove|delete)\s+(?:the\s+)?(.+?)\s+(?:fields?|columns?)", text, re.I
    ):
        names = field_list(m[1])
        return ({}, names) if names else None
    return None


# --- aggregations --------------------------------------------------------------------------

_FUNCTIONS = [
    (r"total|totals|sum(?:\s+of)?|sum\s+up", "sum"),
    (r"average|avg|mean", "avg"),
    (r"max|maximum|highest|largest|biggest", "max"),
    (r"min|minimum|lowest|smallest", "min"),
]


def aggregation(clause: str) -> tuple[dict[str, str], list[str]] | None:
    """(output field -> count | sum:f | ..., group_by) a clause asks for, or None."""
    text = re.sub(
        r"^(?:compute|calculate|aggregate|summari[sz]e|find|get)\s+",
        "",
        clause.strip().rstrip("."),
        flags=re.I,
    )
    text = re.sub(r"^(?:the\s+)", "", text, flags=re.I)
    group: list[str] = []
    if m := re.search(
        r"\b(?:grouped\s+by|group\s+by|by|per|for\s+each|for\s+every|each)\s+(.+)$", text, re.I
    ):
        group = field_list(m[1])
        text = text[: m.start()].strip()
    aggregates: dict[str, str] = {}
    rest = re.sub(r"^group(?:ed)?\s*", "", text, flags=re.I)
    for piece in re.split(r"\s*,\s*|\s+and\s+", rest):
        piece = re.sub(r"^(?:the|and)\s+", "", piece.strip(), flags=re.I)
        if not piece:
            continue
        if re.match(r"(?:count|number|tally|how\s+many)\b", piece, re.I):
            of = re.match(r"(?:count|number)\s+of\s+(?:distinct\s+)?(\w+)", piece, re.I)
            aggregates["count"] = "count"
            if of and of[1].lower().rstrip("s") in ("value", "non-null"):
                aggregates["count"] = "count"
            continue
        for pattern, function in _FUNCTIONS:
            if m := re.fullmatch(rf"(?:{pattern})\s+(?:of\s+)?(?:the\s+)?(\w+)", piece, re.I):
                aggregates[f"{'total' if function == 'sum' else function}_{m[1]}"] = (
                    f"{function}:{m[1]}"
                )
                break
        else:
            if pending := _shared_field(piece, rest):
                aggregates.update(pending)
    if not aggregates and not group:
        return None
    return aggregates, group  # no function named: the generator counts (or merges)


def _shared_field(piece: str, whole: str) -> dict[str, str] | None:
    """`total and average amount`: a function named alone takes the field of the last."""
    for pattern, function in _FUNCTIONS:
        if re.fullmatch(pattern, piece, re.I):
            last = re.search(r"(\w+)\s*$", whole)
            if last and not re.fullmatch(pattern, last[1], re.I):
                name = "total" if function == "sum" else function
                return {f"{name}_{last[1]}": f"{function}:{last[1]}"}
    return None
