"""The library's layout: imports run one way, down the layers; README's Layout list and limits."""

import ast
from pathlib import Path

import inception

ROOT = Path(inception.__file__).parent


def _module_name(path: Path) -> str:
    parts = ("inception", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each module of the package and the package modules it imports, at the top or inside a
    function alike. The facade `inception/__init__.py` is left out: it imports everything."""
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        if name == "inception":
            continue
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in files)
            elif isinstance(node, ast.ImportFrom) and node.module in files:
                subs = {f"{node.module}.{a.name}" for a in node.names} & files.keys()
                deps.update(subs or {node.module})
        graph[name] = deps - {"inception", name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_modules():
    graph = import_graph()
    assert {"inception.train.run", "inception.export", "inception.cli"} <= graph.keys()
    assert "inception.timing" in graph["inception.export"]  # lazy imports count
    assert cycles(graph) == []


def readme_layout() -> list[str]:
    """The modules of README's "Layout" list, in its order (`recipes/` stands for its package)."""
    readme = (ROOT.parents[1] / "README.md").read_text()
    block = readme.split("```\nsrc/inception/\n", 1)[1].split("```", 1)[0]
    order, package = [], None
    for line in block.splitlines():
        name = line.split()[0] if line.strip() else ""
        if line.startswith("  ") and not line.startswith("   ") and name:
            package = name.rstrip("/") if name.endswith("/") else None
            if name.endswith(".py") or name == "recipes/":
                order.append("inception." + name.removesuffix(".py").rstrip("/"))
        elif line.startswith("    ") and name.endswith(".py") and package:
            order.append(f"inception.{package}.{name.removesuffix('.py')}")
        elif not line.startswith("  "):
            break
    return order


def test_every_module_imports_only_modules_above_it_in_the_readme():
    order = readme_layout()
    graph = import_graph()

    def listed(module: str) -> str:
        if module == "inception.train":  # its __init__ re-exports train.run's names
            return "inception.train.run"
        if module == "inception.experiments":  # an empty __init__
            return "inception.experiments.table"
        return "inception.recipes" if module.startswith("inception.recipes") else module

    assert {listed(m) for m in graph} - {"inception.__main__"} == set(order)
    for module, deps in graph.items():
        if module == "inception.__main__":
            continue
        above = set(order[:order.index(listed(module))]) | {listed(module)}
        below = {listed(d) for d in deps} - above
        assert not below, f"{module} imports {sorted(below)}, listed below it in README"


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def test_no_library_file_or_function_is_too_long():
    """Files of about 400 lines at most (cost.py and train/run.py run a little over) and
    functions of at most 60, so that each reads in one sitting."""
    long_files, long_functions = [], []
    for path in ROOT.rglob("*.py"):
        text = path.read_text()
        if text.count("\n") > 430:
            long_files.append(path.name)
        long_functions += [f"{path.name}:{f.name}" for f in _functions(ast.parse(text))
                           if f.end_lineno - f.lineno + 1 > 60]
    assert long_files == [] and long_functions == []


README = ROOT.parents[1] / "README.md"


def test_the_readme_stays_short():
    """README is what a newcomer reads in five minutes; the reference lives in docs/."""
    assert README.read_text().count("\n") <= 250


def test_the_folders_and_scripts_of_the_layout_list_exist():
    """The lines of README's Layout list after the package: each names a folder of the
    repository, and the scripts/ line names files in scripts/."""
    block = README.read_text().split("```\nsrc/inception/\n", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line and not line.startswith(" ")]
    folders = {line.split()[0]: line.split(None, 1)[1] for line in lines}
    assert {"tests/", "benchmarks/", "scripts/", "docs/"} <= folders.keys()
    repo = README.parent
    assert [f for f in folders if not (repo / f).is_dir()] == []
    scripts = [w.strip(",") for w in folders["scripts/"].split() if "." in w.strip(",")]
    assert scripts and [s for s in scripts if not (repo / "scripts" / s).is_file()] == []
