"""The import layers written at the top of `pipeline/__init__.py` hold, read from the source with `ast`:

- no module imports from a layer above its own (module-level, `if TYPE_CHECKING:` and function-local
  imports alike: each is a dependency);
- no import cycle between pipeline modules through the imports that run when a module is imported;
- a function imports for itself only a heavy or optional third-party package (`LAZY_OK`), or a
  pipeline module that imports Ray when it is imported, and says why in a comment on the import or
  on the line above; the stdlib, other pipeline modules and light dependencies go at the top;
- nothing below the execution layer imports Ray.
"""

from __future__ import annotations

import ast
import io
import re
import sys
import tokenize
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

import pipeline
from tests.helpers import REPO

PACKAGE = REPO / "pipeline"

#: Third-party packages a function may import for itself. Everything else (the stdlib, `pipeline.*`,
#: light dependencies every process loads anyway: numpy, pyarrow, pydantic, fsspec, yaml, ...) is
#: imported at the top of the module.
LAZY_OK = {
    # heavy: seconds of import time, or native libraries a process that does not use them should not load
    "ray",
    "torch",
    "nemo",
    "faster_whisper",
    "ctranslate2",
    "resemblyzer",
    "matplotlib",
    "lhotse",
    "scipy",
    "sklearn",
    "av",
    "soundfile",
    "deltalake",
    "aiohttp",
    "onnxruntime",
    # optional: an extra (`itn`, `test`) that a plain install lacks
    "nemo_text_processing",
    "jiwer",
    "whisper_normalizer",
    # the foundation layer imports nothing but the stdlib when it is imported (`pipeline.errors`)
    "tenacity",
}

#: Comments that say nothing about why (linter directives).
_DIRECTIVE = re.compile(r"#\s*(noqa\b[^#]*|type:\s*ignore\b[^#]*|pragma\b[^#]*)")


@dataclass(frozen=True)
class Import:
    module: str  # the importing pipeline module
    line: int
    end_line: int
    target: str  # the imported module, dotted (`pipeline.x.y`, `torch`, `os.path`)
    scope: str  # "module" (runs on import), "type_checking" (never runs), "function"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _targets(module: str, node: ast.Import | ast.ImportFrom, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: from the importing module's package
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([base] if base else []))
    # `from pipeline.x import y`: the module pipeline.x.y when there is one, else a name in pipeline.x
    return sorted({f"{base}.{a.name}" if f"{base}.{a.name}" in _modules() else base for a in node.names})


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


@cache
def _imports() -> tuple[Import, ...]:
    found: list[Import] = []
    for module, path in _modules().items():
        is_package = path.name == "__init__.py"

        def visit(node: ast.AST, scope: str) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                    visit(child, "function")
                elif isinstance(child, ast.If) and scope == "module" and _is_type_checking(child.test):
                    for stmt in child.body:
                        visit(ast.Module(body=[stmt], type_ignores=[]), "type_checking")
                    for stmt in child.orelse:
                        visit(ast.Module(body=[stmt], type_ignores=[]), scope)
                elif isinstance(child, (ast.Import, ast.ImportFrom)):
                    found.extend(
                        Import(module, child.lineno, child.end_lineno or child.lineno, t, scope)
                        for t in _targets(module, child, is_package)
                    )
                else:  # a class body, `try:` or `if` at module level runs on import
                    visit(child, scope)

        visit(ast.parse(path.read_text(), str(path)), "module")
    return tuple(found)


def _internal(target: str) -> bool:
    return target == "pipeline" or target.startswith("pipeline.")


# -- the layers, as written in pipeline/__init__.py --------------------------------------------------------


@cache
def _layers() -> list[tuple[str, list[str]]]:
    """[(layer, [module prefixes under pipeline/])], bottom first, from the table in the package's
    docstring: a line `    <layer>  <module> <module> ...`, indented further to continue."""
    lines = (pipeline.__doc__ or "").splitlines()
    start = next(i for i, line in enumerate(lines) if line.split() == ["layer", "modules"])
    layers: list[tuple[str, list[str]]] = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        if re.match(r"    \S", line):
            name, *mods = line.split()
            layers.append((name, mods))
        else:
            layers[-1][1].extend(line.split())
    return layers


def _layer_of(module: str) -> int:
    """Index of the module's layer (0: the bottom); the package itself (`__version__`) is at the bottom."""
    if module == "pipeline":
        return 0
    rel = module.removeprefix("pipeline.")
    best = None
    for index, (_name, prefixes) in enumerate(_layers()):
        for prefix in prefixes:
            if (rel == prefix or rel.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[1])):
                best = (index, prefix)
    if best is None:
        raise KeyError(module)
    return best[0]


def _layer_name(module: str) -> str:
    return _layers()[_layer_of(module)][0]


# -- the module-level import graph ------------------------------------------------------------------------


@cache
def _graph() -> dict[str, set[str]]:
    """pipeline module -> the pipeline modules it imports when it is imported (not the package
    `__init__`s an import of a submodule also runs: a package importing its submodules, which import
    each other by full name, is no cycle)."""
    graph: dict[str, set[str]] = {m: set() for m in _modules()}
    for imp in _imports():
        if imp.scope == "module" and _internal(imp.target) and imp.target in graph:
            graph[imp.module].add(imp.target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


@cache
def _imports_ray_on_import() -> frozenset[str]:
    """The pipeline modules that import Ray when they are imported, directly or through another
    pipeline module (or the package `__init__` of one)."""
    direct = {i.module for i in _imports() if i.scope == "module" and i.target.split(".")[0] == "ray"}
    graph = _graph()
    parents = {m: {".".join(m.split(".")[:k]) for k in range(2, len(m.split(".")))} & set(graph) for m in graph}
    heavy = set(direct)
    changed = True
    while changed:
        changed = False
        for m, deps in graph.items():
            if m not in heavy and any(d in heavy or parents[d] & heavy for d in deps):
                heavy.add(m)
                changed = True
    return frozenset(heavy)


# -- comments ---------------------------------------------------------------------------------------------


@cache
def _comment_lines(module: str) -> tuple[frozenset[int], frozenset[int]]:
    """(lines with a comment that says something, lines that hold nothing but such a comment)."""
    source = _modules()[module].read_text()
    lines = source.splitlines()
    said: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT and _DIRECTIVE.sub("", tok.string).strip("# "):
            said.add(tok.start[0])
    alone = {n for n in said if lines[n - 1].lstrip().startswith("#")}
    return frozenset(said), frozenset(alone)


def _says_why(imp: Import) -> bool:
    """A comment on the import's own lines, or on the line above it."""
    said, alone = _comment_lines(imp.module)
    return any(n in said for n in range(imp.line, imp.end_line + 1)) or imp.line - 1 in alone


# -- the tests --------------------------------------------------------------------------------------------


def test_the_layers_are_written_down():
    names = [name for name, _ in _layers()]
    assert names[0] == "foundation" and names[-1] == "cli", names
    assert len(names) == len(set(names)), names
    prefixes = [p for _, mods in _layers() for p in mods]
    assert len(prefixes) == len(set(prefixes)), "a module is in two layers"


def test_every_module_has_a_layer():
    missing = []
    for module in _modules():
        try:
            _layer_of(module)
        except KeyError:
            missing.append(module)
    assert not missing, f"add these to the layer table in pipeline/__init__.py: {missing}"


def test_no_module_imports_from_a_layer_above_its_own():
    wrong = [
        f"{imp.module} ({_layer_name(imp.module)}) imports {imp.target} ({_layer_name(imp.target)}), "
        f"line {imp.line}, {imp.scope}"
        for imp in _imports()
        if _internal(imp.target) and imp.target in _modules() and _layer_of(imp.target) > _layer_of(imp.module)
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles between pipeline modules:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_function_local_imports_are_heavy_or_optional_and_say_why():
    ray_heavy = _imports_ray_on_import()
    wrong = []
    said: dict[tuple[str, int], bool] = {}  # (module, end line) -> the import there says why
    for imp in sorted((i for i in _imports() if i.scope == "function"), key=lambda i: (i.module, i.line, i.target)):
        where = f"{imp.module}:{imp.line} imports {imp.target} in a function"
        top = imp.target.split(".")[0]
        # an import right below one that says why shares its reason (`import torch` / `from nemo... import`)
        ok = _says_why(imp) or said.get((imp.module, imp.line - 1), False)
        said[(imp.module, imp.end_line)] = ok
        if _internal(imp.target) and imp.target not in ray_heavy:
            wrong.append(f"{where}: a pipeline module goes at the top (a cycle is fixed by moving code)")
        elif top in sys.stdlib_module_names or top == "__future__":
            wrong.append(f"{where}: the stdlib goes at the top")
        elif not _internal(imp.target) and top not in LAZY_OK:
            wrong.append(f"{where}: {top} is light; import it at the top (or add it to LAZY_OK, saying why)")
        elif not ok:
            wrong.append(f"{where}: say why in a comment on the import or the line above (`# heavy: ...`)")
    assert not wrong, "\n".join(dict.fromkeys(wrong))


def test_only_the_execution_layer_and_above_import_ray():
    execution = [name for name, _ in _layers()].index("execution")
    below = sorted(m for m in _imports_ray_on_import() if _layer_of(m) < execution)
    assert not below, f"these import Ray when they are imported: {below}"
    inside = sorted(
        f"{i.module}:{i.line}"
        for i in _imports()
        if i.target.split(".")[0] == "ray" and _layer_of(i.module) < execution
    )
    assert not inside, f"Ray is the execution layer's: {inside}"


@pytest.mark.parametrize("module", ["pipeline.execution", "pipeline.runner"])
def test_the_layers_see_ray_where_it_is(module):
    # the checks above rely on finding Ray's import; the execution package imports it on purpose
    assert module in _imports_ray_on_import()
