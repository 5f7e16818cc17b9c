#!/usr/bin/env python3
"""The package's shape, measured: module sizes, class sizes, import circles and layer direction.

    python scripts/check_layout.py            # report; exit 1 when a rule is broken
    python scripts/check_layout.py --quiet    # only the problems

Rules (docs/architecture.md):
  * no module of depth_ego_ros/ above MAX_MODULE_LINES lines, no class above MAX_CLASS_LINES,
    unless it is listed in ALLOWED_LARGE with the reason it is better whole;
  * no import circle between modules of the package (module-level and function-level imports
    both count: a lazy import still ties the two modules together);
  * imports only go down the layers: core <- zoo, data <- training/evaluation/live <- ros <- cli.

Only the standard library is used (ast), so it runs anywhere, without torch or rclpy.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = 'depth_ego_ros'
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 300

# module or 'module:Class' -> why it is better whole
ALLOWED_LARGE: dict[str, str] = {}

# Lower number = lower layer. A module may import from its own layer or any lower one.
LAYERS = {'core': 0, 'zoo': 1, 'data': 1, 'training': 2, 'evaluation': 2, 'live': 2, 'ros': 3,
          'demo': 3, 'cli': 4}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix('')
    parts = list(rel.parts)
    if parts[-1] == '__init__':
        parts = parts[:-1]
    return '.'.join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / PACKAGE).rglob('*.py'))}


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ''
    base = mod.split('.') if is_pkg else mod.split('.')[:-1]
    base = base[:len(base) - (node.level - 1)]
    return '.'.join(base + ([node.module] if node.module else []))


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Package-internal imports of each module (to the deepest module that exists)."""
    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        is_pkg = path.name == '__init__.py'
        deps: set[str] = set()
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_pkg, node)
                names = [f'{base}.{a.name}' for a in node.names] + [base]
            for name in names:
                if not name.startswith(PACKAGE):
                    continue
                while name and name not in mods:
                    name = name.rpartition('.')[0]
                if name and name != mod:
                    deps.add(name)
        graph[mod] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan). Package __init__
    files that only re-export their children are left out: `pkg -> pkg.child` is not a circle."""
    def edges(m):
        # a child importing its own package's __init__ is the normal re-export pattern
        return [d for d in graph[m] if not (m.startswith(d + '.') or d.startswith(m + '.'))]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def layer(mod: str) -> int | None:
    parts = mod.split('.')
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def layer_violations(graph) -> list[str]:
    bad = []
    for mod, deps in graph.items():
        lm = layer(mod)
        for d in deps:
            ld = layer(d)
            if lm is not None and ld is not None and ld > lm:
                bad.append(f'{mod} imports {d} (a higher layer)')
    return sorted(bad)


def sizes(mods: dict[str, Path]):
    big_modules, big_classes = [], []
    for mod, path in mods.items():
        text = path.read_text()
        n = len(text.splitlines())
        if n > MAX_MODULE_LINES:
            big_modules.append((mod, n))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_CLASS_LINES:
                    big_classes.append((f'{mod}:{node.name}', length))
    return big_modules, big_classes


def check() -> dict:
    mods = modules()
    graph = imports(mods)
    big_modules, big_classes = sizes(mods)
    return {
        'modules': len(mods),
        'big_modules': [(m, n) for m, n in big_modules if m not in ALLOWED_LARGE],
        'big_classes': [(c, n) for c, n in big_classes if c not in ALLOWED_LARGE],
        'allowed': [(m, n) for m, n in big_modules + big_classes if m in ALLOWED_LARGE],
        'cycles': cycles(graph),
        'layers': layer_violations(graph),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quiet', action='store_true')
    args = ap.parse_args(argv)
    r = check()
    if not args.quiet:
        print(f"{r['modules']} modules in {PACKAGE}/")
        for m, n in r['allowed']:
            print(f'  allowed large: {m} ({n} lines): {ALLOWED_LARGE[m]}')
    for m, n in r['big_modules']:
        print(f'module above {MAX_MODULE_LINES} lines: {m} ({n})')
    for c, n in r['big_classes']:
        print(f'class above {MAX_CLASS_LINES} lines: {c} ({n})')
    for c in r['cycles']:
        print('import circle: ' + ' <-> '.join(c))
    for v in r['layers']:
        print('layer violation: ' + v)
    bad = r['big_modules'] or r['big_classes'] or r['cycles'] or r['layers']
    if not args.quiet and not bad:
        print('layout OK')
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
