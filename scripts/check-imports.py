#!/usr/bin/env python3
"""Fails when a target imports a kioskd target that docs/ARCHITECTURE.md's import table forbids.

The table (section "Allowed imports") is the owner of the rule: one row per target, the kioskd
targets it may import. Library imports (NIO, Hummingbird, Glibc …) are not checked here;
Package.swift decides those.
"""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
doc = (root / "docs/ARCHITECTURE.md").read_text()
section = doc.split("## Allowed imports", 1)
if len(section) != 2:
    sys.exit("check-imports: docs/ARCHITECTURE.md has no '## Allowed imports' section")
allowed = {}
for line in section[1].splitlines():
    m = re.match(r"\|\s*`([A-Za-z0-9]+)`\s*\|\s*([^|]*)\|", line)
    if m:
        allowed[m.group(1)] = {w for w in re.findall(r"`([A-Za-z0-9]+)`", m.group(2))}
    elif allowed and not line.startswith("|"):
        break

targets = sorted(p.name for p in (root / "Sources").iterdir() if p.is_dir())
problems = []
for target in targets:
    if target not in allowed:
        problems.append(f"{target}: not in the import table of docs/ARCHITECTURE.md")
        continue
    for path in sorted((root / "Sources" / target).rglob("*.swift")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            m = re.match(r"\s*(?:@testable\s+|@_exported\s+)?import\s+(?:struct\s+|enum\s+|class\s+|func\s+)?([A-Za-z0-9_]+)", line)
            if m and m.group(1) in targets and m.group(1) != target and m.group(1) not in allowed[target]:
                problems.append(f"{path.relative_to(root)}:{n}: {target} may not import {m.group(1)} "
                                f"(allowed: {', '.join(sorted(allowed[target])) or 'no kioskd target'})")
for name in sorted(set(allowed) - set(targets)):
    problems.append(f"docs/ARCHITECTURE.md lists `{name}`, which is not a target in Sources/")
if problems:
    print("\n".join(problems))
    sys.exit(1)
print(f"imports: {len(targets)} targets follow docs/ARCHITECTURE.md")
