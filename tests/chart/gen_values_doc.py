"""Generates the values table of charts/jobsched/README.md from the `# --` comments in
values.yaml (between the `<!-- values:start -->` and `<!-- values:end -->` markers).

    python tests/chart/gen_values_doc.py          # rewrite the table
    python tests/chart/gen_values_doc.py --check  # exit 1 when the README is out of date
"""

import json
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
VALUES = ROOT / "charts/jobsched/values.yaml"
README = ROOT / "charts/jobsched/README.md"
START, END = "<!-- values:start -->", "<!-- values:end -->"
KEY = re.compile(r"^(\s*)([A-Za-z0-9_]+):(.*)$")


def documented_keys() -> list[tuple[str, str]]:
    """(dotted key, description) for every key that carries a `# --` comment."""
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    out = []
    for line in VALUES.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#") and pending is not None:
            pending.append(stripped[1:].strip())
            continue
        m = KEY.match(line)
        if not m:
            if stripped and not stripped.startswith("-"):
                pending = None
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group(2)))
        if pending is not None:
            out.append((".".join(k for _, k in stack), " ".join(pending)))
            pending = None
    return out


def lookup(values, dotted):
    for part in dotted.split("."):
        values = values[part]
    return values


def table() -> str:
    values = yaml.safe_load(VALUES.read_text())
    rows = ["| Key | Default | Description |", "|---|---|---|"]
    for key, desc in documented_keys():
        default = json.dumps(lookup(values, key), separators=(", ", ": "))
        default = default.replace("|", "\\|")
        desc = desc.replace("|", "\\|")
        rows.append(f"| `{key}` | `{default}` | {desc} |")
    return "\n".join(rows)


def updated(readme: str) -> str:
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table()}\n{END}{tail}"


if __name__ == "__main__":
    current = README.read_text()
    new = updated(current)
    if "--check" in sys.argv:
        sys.exit(0 if new == current else 1)
    README.write_text(new)
    print(f"updated {README.relative_to(ROOT)}")
