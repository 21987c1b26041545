"""MkDocs hook: render benchmarks/results/*.json into the "Benchmark results" page.

`docs/benchmarks.md` holds the placeholder `<!-- benchmark-results -->`; at build time it is
replaced by one section per JSON file (title, device, versions, date, arguments, and every
number of the file as Markdown tables). A PNG next to a JSON file (same stem) is copied into
the site and shown under it. Nothing is typed by hand: rerun a benchmark, rebuild the site.

The files differ in structure, so the rendering is generic:

- a record's scalars (and small dicts of scalars, as dotted columns) form one table;
- a dict whose values are all dicts (e.g. `cases`, `runs`, `solvers`) becomes one record
  per key, and a list of dicts (e.g. `rows`) one record per item, rendered recursively;
- nested lists of numbers (coordinate-check arrays) become tables, rows labelled by the
  record's `sizes` where they match, in collapsible blocks;
- long lists of numbers (raw repeat timings) are summarised by their count and range.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from mkdocs.structure.files import File

PLACEHOLDER = "<!-- benchmark-results -->"
PAGE = "benchmarks.md"
IMAGES = "benchmark-results"  # folder of the copied PNGs in the site
_INLINE_DICT = 6  # dicts of at most this many scalars are inlined as dotted columns
_SHORT_LIST = 12  # lists of scalars up to this length are shown in full
_TRANSPOSE = 6  # tables with more columns than this and at most 4 records are transposed


def _results_dir(config) -> Path:
    return Path(config.config_file_path).resolve().parent / "benchmarks" / "results"


# ------------------------------------------------------------------ formatting


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    magnitude = abs(value)
    if value == 0:
        return "0"
    if 1e4 <= magnitude < 1e12:
        return f"{value:,.0f}"
    if magnitude < 1e-3:
        return f"{value:.3e}"
    return f"{value:.4g}"


def _text(value: str) -> str:
    escaped = html.escape(value, quote=False)
    for char in "\\|*_`[]":
        escaped = escaped.replace(char, "\\" + char)
    return escaped.replace("\n", " ")


def _is_scalar(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _is_scalar_list(value) -> bool:
    return isinstance(value, list) and all(_is_scalar(v) for v in value)


def _is_array(value) -> bool:
    """A list of lists (of lists …) of numbers."""
    return (isinstance(value, list) and len(value) > 0 and all(isinstance(v, list) for v in value)
            and all(_is_scalar_list(v) or _is_array(v) for v in value))


def _cell(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, (bool, int, float)):
        return _number(value)
    if _is_scalar_list(value):
        if len(value) <= _SHORT_LIST:
            return ", ".join(_cell(v) for v in value) if value else "—"
        numbers = [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numbers) == len(value):
            return f"{len(value)} values, {_number(min(numbers))} … {_number(max(numbers))}"
        return f"{len(value)} values"
    return _text(json.dumps(value))


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


# ------------------------------------------------------------------ records


def _split(record: dict) -> tuple[dict, list[tuple[str, object]]]:
    """A record's scalar columns (small dicts of scalars inlined as `key.sub`) and its
    nested parts, in the file's order."""
    scalars: dict = {}
    children: list[tuple[str, object]] = []
    for key, value in record.items():
        if _is_scalar(value) or (_is_scalar_list(value) and not _is_array(value)):
            scalars[key] = value
        elif (isinstance(value, dict) and 0 < len(value) <= _INLINE_DICT
              and all(_is_scalar(v) or _is_scalar_list(v) for v in value.values())):
            for sub, item in value.items():
                scalars[f"{key}.{sub}"] = item
        else:
            children.append((key, value))
    return scalars, children


def _item_label(index: int, item: dict) -> str:
    """A list item's label: its leading integer or short text fields (e.g. `width=64,
    depth=8`), which identify a row in every table it has parts in; else its position."""
    keys = []
    for key, value in item.items():
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and len(value) <= 24)):
            break
        keys.append(f"{key}={value}")
    return ", ".join(keys[:3]) if keys else f"#{index + 1}"


def _join(label: str, child: str) -> str:
    return f"{label} / {child}" if label else child


def _render_records(path: list[str], records: list[tuple[str, dict]], out: list[str]) -> None:
    """One table of the records' scalars, then their nested parts, recursively."""
    split = [(label, *_split(record)) for label, record in records]
    columns: list[str] = []
    for _, scalars, _ in split:
        columns += [c for c in scalars if c not in columns]
    if columns:
        if path:
            out += [f"**{_text(' › '.join(path))}**", ""]
        if len(split) == 1 and not split[0][0]:
            scalars = split[0][1]
            out += _table(["field", "value"], [[_text(c), _cell(scalars.get(c))] for c in columns])
        elif len(columns) > _TRANSPOSE and len(split) <= 4:
            header = ["field"] + [_text(label) for label, _, _ in split]
            out += _table(header, [[_text(c)] + [_cell(s.get(c)) for _, s, _ in split] for c in columns])
        else:
            header = [_text(" / ".join(path) or "record")] + [_text(c) for c in columns]
            out += _table(header, [[_text(label)] + [_cell(s.get(c)) for c in columns] for label, s, _ in split])
    names: list[str] = []
    for _, _, children in split:
        names += [name for name, _ in children if name not in names]
    for name in names:
        nested: list[tuple[str, dict]] = []
        for label, record in records:
            if name not in record:
                continue
            value = record[name]
            if _is_array(value):
                _render_array(path + [name], label, value, record.get("sizes"), out)
            elif isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
                nested += [(_join(label, str(k)), v) for k, v in value.items()]
            elif isinstance(value, dict):
                nested.append((label, value))
            elif isinstance(value, list) and all(isinstance(v, dict) for v in value):
                labels = [_item_label(i, v) for i, v in enumerate(value)]
                if len(set(labels)) < len(labels):  # not identifying: number them
                    labels = [f"#{i + 1}" for i in range(len(value))]
                nested += [(_join(label, item_label), v) for item_label, v in zip(labels, value, strict=True)]
            else:  # a list mixing kinds: show it as it is
                out += [f"**{_text(' › '.join(path + [name]))}**" + (f" ({_text(label)})" if label else "")
                        + f": {_cell(value)}", ""]
        if nested:
            _render_records(path + [name], nested, out)


def _render_array(path: list[str], label: str, array: list, sizes, out: list[str]) -> None:
    """A 2-D or 3-D list of numbers as one table in a collapsible block: rows are the
    leading indices (labelled by `sizes` where the first axis matches), columns the last."""
    rows: list[tuple[list[str], list]] = []

    def walk(prefix: list[str], value: list, depth: int) -> None:
        if _is_scalar_list(value):
            rows.append((prefix, value))
            return
        for i, item in enumerate(value):
            name = (f"size {sizes[i]}" if depth == 0 and isinstance(sizes, list) and len(sizes) == len(value)
                    else str(i))
            walk(prefix + [name], item, depth + 1)

    walk([], array, 0)
    width = max(len(values) for _, values in rows)
    depth = max(len(prefix) for prefix, _ in rows)
    header = [("size" if k == 0 and isinstance(sizes, list) and len(sizes) == len(array) else f"axis {k}")
              for k in range(depth)] + [f"[{j}]" for j in range(width)]
    body = [[_text(p) for p in prefix] + [_cell(v) for v in values] + [""] * (width - len(values))
            for prefix, values in rows]
    title = " › ".join(path) + (f" ({label})" if label else "")
    out += [f'??? note "{title.replace(chr(34), chr(39))}"', ""]
    out += ["    " + line if line else "" for line in _table(header, body)]


# ------------------------------------------------------------------ one file


def _header(name: str, data: dict) -> list[str]:
    title = data.get("benchmark") if isinstance(data.get("benchmark"), str) else Path(name).stem
    lines = [f"## {_text(title)} — `{name}`", ""]
    environment = data.get("environment")
    if isinstance(environment, dict):
        device = environment.get("device_kind", "unknown device")
        platform = environment.get("platform")
        count = environment.get("device_count")
        details = ", ".join(str(part) for part in (
            platform, f"{count} device{'s' if count != 1 else ''}" if count is not None else None,
            f"{environment['cpu_count']} CPU cores" if environment.get("cpu_count") is not None else None,
        ) if part)
        lines.append(f"- **Device:** {_text(str(device))}" + (f" ({_text(details)})" if details else ""))
        versions = environment.get("versions") or {}
        version_text = ", ".join(f"{_text(k)} {_text(str(v))}" for k, v in versions.items())
        if environment.get("python"):
            version_text += (", " if version_text else "") + f"Python {_text(str(environment['python']))}"
        lines.append(f"- **Versions:** {version_text or 'not recorded'}")
        if environment.get("date_utc"):
            lines.append(f"- **Date (UTC):** {_text(str(environment['date_utc']))}")
        if environment.get("load_average_at_start") is not None:
            lines.append(f"- **Load average at start:** {_cell(environment['load_average_at_start'])}")
        if environment.get("xla_flags"):
            lines.append(f"- **XLA_FLAGS:** `{environment['xla_flags']}`")
    else:
        lines.append("- **Device and versions:** not recorded in this file")
    if isinstance(data.get("argv"), list):
        arguments = " ".join(str(a) for a in data["argv"])
        lines.append(f"- **Arguments:** `{arguments}`" if arguments else "- **Arguments:** none (defaults)")
    return lines + [""]


def render_file(path: Path, image: str | None) -> str:
    data = json.loads(path.read_text(encoding="utf-8"))
    out = _header(path.name, data) if isinstance(data, dict) else [f"## `{path.name}`", ""]
    if image is not None:
        out += [f"![{_text(path.stem)}]({image})", ""]
    if isinstance(data, dict):
        body = {k: v for k, v in data.items() if k not in ("environment", "argv", "benchmark")}
        _render_records([], [("", body)], out)
    elif isinstance(data, list) and all(isinstance(v, dict) for v in data):
        _render_records([], [(_item_label(i, v), v) for i, v in enumerate(data)], out)
    else:
        out += [_cell(data), ""]
    return "\n".join(out)


def render_all(results: Path) -> str:
    files = sorted(results.glob("*.json"))
    if not files:
        return "*No benchmark results in `benchmarks/results/`.*\n"
    index = ["| file | benchmark | device | date (UTC) |", "|---|---|---|---|"]
    sections = []
    for path in files:
        data = json.loads(path.read_text(encoding="utf-8"))
        environment = data.get("environment", {}) if isinstance(data, dict) else {}
        title = data.get("benchmark", path.stem) if isinstance(data, dict) else path.stem
        index.append(f"| `{path.name}` | {_text(str(title))} | {_text(str(environment.get('device_kind', '—')))} "
                     f"| {_text(str(environment.get('date_utc', '—')))} |")
        image = f"{IMAGES}/{path.stem}.png" if path.with_suffix(".png").exists() else None
        sections.append(render_file(path, image))
    return "\n".join(index) + "\n\n" + "\n\n".join(sections) + "\n"


# ------------------------------------------------------------------ MkDocs events


def on_config(config, **kwargs):
    results = _results_dir(config)
    if results.is_dir() and str(results) not in config.watch:
        config.watch.append(str(results))
    return config


def on_files(files, config, **kwargs):
    for png in sorted(_results_dir(config).glob("*.png")):
        if png.with_suffix(".json").exists():
            files.append(File.generated(config, f"{IMAGES}/{png.name}", abs_src_path=str(png)))
    return files


def on_page_markdown(markdown, page, config, files, **kwargs):
    if page.file.src_uri != PAGE:
        return markdown
    if PLACEHOLDER not in markdown:
        raise ValueError(f"docs/{PAGE} lacks the placeholder {PLACEHOLDER}")
    return markdown.replace(PLACEHOLDER, render_all(_results_dir(config)))
