"""The package's import direction, read from the source with ``ast`` (every import, lazy ones included).

LAYERS below is the one statement of the layer order; ``regzoo/__init__.py``'s docstring lists the same
order and a test checks that the two agree. Rules:

(a) a subpackage imports only from its own layer or an earlier one;
(b) library code (any subpackage but ``cli``) never imports a command-line module (``regzoo/cli/``, the top
    layer, or the ``regzoo/*.py`` aliases of its commands) nor the root package ``regzoo`` itself;
(c) no import cycle between modules, counting imports inside functions.

Third-party imports are not edges here; `test_import_regzoo_skips_heavy_libraries` covers those.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import regzoo

LAYERS = ('utils', 'models', 'data', 'zoo', 'analysis', 'eval', 'deploy', 'training', 'cli')
CLI_LAYER = LAYERS[-1]  # the command lines: nothing imports them
PACKAGE_DIR = Path(regzoo.__file__).parent
HEAVY = ('timm', 'torchvision', 'transformers', 'matplotlib', 'onnx', 'onnxruntime', 'onnxscript',
         'huggingface_hub', 'yaml', 'datasets', 'webdataset')  # not tqdm: torch.hub imports it


@dataclass(frozen=True)
class Edge:
    """``importer`` imports ``imported`` at ``path:line``; both are dotted module names inside the package."""
    importer: str
    imported: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f'{self.path}:{self.line}: {self.importer} imports {self.imported}'


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name -> file for every module of the package rooted at ``root`` (a package's name is its __init__)."""
    names = {}
    for path in sorted(root.rglob('*.py')):
        parts = (root.name, *path.relative_to(root).with_suffix('').parts)
        if parts[-1] == '__init__':
            parts = parts[:-1]
        names['.'.join(parts)] = path
    return names


def import_graph(root: Path) -> list[Edge]:
    """Every import of one package module by another, from every statement (function bodies included).

    ``from X import Y`` is an edge to ``X.Y`` when that is a module, else to ``X``; relative imports are
    resolved against the importing module's package. Imports of other top-level names are ignored.
    """
    modules = module_names(root)
    top = root.name
    edges = []
    for name, path in modules.items():
        is_package = path.name == '__init__.py'
        package = name if is_package else name.rpartition('.')[0]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = package.split('.')
                    base_parts = base_parts[:len(base_parts) - (node.level - 1)]
                    base = '.'.join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ''
                for alias in node.names:
                    sub = f'{base}.{alias.name}'
                    targets.append(sub if sub in modules else base)
            elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                  and isinstance(node.args[0].value, str) and _call_name(node.func) in ('import_module', '__import__')):
                targets = [node.args[0].value]
            for target in targets:
                if target == top or target.startswith(top + '.'):
                    imported = _nearest_module(target, modules)
                    edge = Edge(name, imported, path.relative_to(root.parent), node.lineno)
                    if imported != name and edge not in edges:
                        edges.append(edge)
    return edges


def _call_name(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ''


def _nearest_module(target: str, modules: dict[str, Path]) -> str:
    """``regzoo.zoo.builder.create_model`` (an ``import a.b`` never names an attribute, but be safe) -> the module."""
    while target not in modules and '.' in target:
        target = target.rpartition('.')[0]
    return target


def check_layers(root: Path, layers: tuple[str, ...] = LAYERS) -> list[str]:
    """Every violation of rules (a)-(c) for the package at ``root``, one line each naming file:line; [] if none."""
    modules = module_names(root)
    top = root.name
    subpackages = {p.name for p in root.iterdir() if (p / '__init__.py').is_file()}
    clis = {name for name, path in modules.items()
            if (name.count('.') == 1 and path.parent == root) or name.split('.')[1:2] == [CLI_LAYER]}
    problems = [f'{root.name}/{sub}/ is not in the layer order {layers}; add it to LAYERS in tests/test_layers.py'
                for sub in sorted(subpackages - set(layers))]
    rank = {layer: i for i, layer in enumerate(layers)}
    edges = import_graph(root)
    for e in edges:
        src = e.importer.split('.')
        if len(src) < 2 or src[1] not in subpackages or src[1] == CLI_LAYER:
            continue  # the root package and the command lines may import anything below them
        dst = e.imported.split('.')
        if e.imported == top:
            problems.append(f'{e}: library code must not import the root package; import the defining module')
        elif e.imported in clis:
            problems.append(f'{e}: library code must not import a command-line module; '
                            'move the shared code into a layer')
        elif dst[1] in rank and src[1] in rank and rank[dst[1]] > rank[src[1]]:
            problems.append(f'{e}: layer {src[1]!r} must not import the later layer {dst[1]!r} '
                            f'(order: {" < ".join(layers)})')
    problems += [f'import cycle {" -> ".join(cycle)}: ' + '; '.join(str(e) for e in cycle_edges)
                 for cycle, cycle_edges in find_cycles(edges)]
    return problems


def find_cycles(edges: list[Edge]) -> list[tuple[list[str], list[Edge]]]:
    """Strongly connected components with more than one module (Tarjan), each with the edges inside it."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.importer, set()).add(e.imported)
        graph.setdefault(e.imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(v: str) -> None:  # recursion depth is bounded by the module count (~60)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
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
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [(c, [e for e in edges if e.importer in c and e.imported in c]) for c in components]


# ----------------------------------------------------------------------------------------------- the real tree

def test_package_follows_the_layer_order():
    problems = check_layers(PACKAGE_DIR)
    assert not problems, '\n'.join(problems)


def test_package_docstring_lists_the_layer_order():
    """regzoo/__init__.py documents the layers; the order there must be LAYERS."""
    listed = re.findall(r'^    (\w+) {2,}', regzoo.__doc__, flags=re.MULTILINE)
    assert tuple(listed) == LAYERS


def test_every_subpackage_is_a_layer():
    subpackages = {p.name for p in PACKAGE_DIR.iterdir() if (p / '__init__.py').is_file()}
    assert subpackages == set(LAYERS)


# ------------------------------------------------------------------------- the checker fails when it should

def _fake_package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / 'pkg'
    for sub in ('', *LAYERS):
        (root / sub).mkdir(parents=True, exist_ok=True)
        (root / sub / '__init__.py').write_text('')
    (root / 'alias.py').write_text('')
    for rel, text in files.items():
        (root / rel).write_text(text)
    return root


def test_checker_passes_a_clean_fake_package(tmp_path):
    root = _fake_package(tmp_path, {
        'models/x.py': 'from pkg.utils import helpers\n',
        'utils/helpers.py': 'import os\n',
        'zoo/y.py': 'from ..models import x\nfrom pkg.models.x import helpers\n',
        'alias.py': 'import pkg.cli.c\n',
        'cli/c.py': 'import pkg.zoo.y\n',
    })
    assert check_layers(root) == []


def test_checker_reports_a_lazy_back_edge(tmp_path):
    """models/x.py importing zoo/y.py inside a function is still a back-edge."""
    root = _fake_package(tmp_path, {
        'models/x.py': 'def f():\n    from pkg.zoo import y\n    return y\n',
        'zoo/y.py': 'X = 1\n',
    })
    assert check_layers(root) == [
        "pkg/models/x.py:2: pkg.models.x imports pkg.zoo.y: layer 'models' must not import the later layer 'zoo' "
        "(order: utils < models < data < zoo < analysis < eval < deploy < training < cli)"]


def test_checker_reports_a_relative_back_edge(tmp_path):
    root = _fake_package(tmp_path, {'utils/a.py': 'from ..data import b\n', 'data/b.py': ''})
    [problem] = check_layers(root)
    assert problem.startswith("pkg/utils/a.py:1: pkg.utils.a imports pkg.data.b: layer 'utils' must not import")


def test_checker_reports_imports_of_cli_and_root(tmp_path):
    root = _fake_package(tmp_path, {'eval/e.py': 'import pkg.alias\nimport pkg\nfrom pkg.cli import c\n',
                                    'cli/c.py': ''})
    problems = check_layers(root)
    assert problems == [
        'pkg/eval/e.py:1: pkg.eval.e imports pkg.alias: library code must not import a command-line module; '
        'move the shared code into a layer',
        'pkg/eval/e.py:2: pkg.eval.e imports pkg: library code must not import the root package; '
        'import the defining module',
        'pkg/eval/e.py:3: pkg.eval.e imports pkg.cli.c: library code must not import a command-line module; '
        'move the shared code into a layer']


def test_checker_reports_a_cycle_inside_one_layer(tmp_path):
    root = _fake_package(tmp_path, {
        'zoo/a.py': 'from pkg.zoo.b import B\nA = 1\n',
        'zoo/b.py': 'B = 2\ndef f():\n    from pkg.zoo.a import A\n    return A\n',
    })
    [problem] = check_layers(root)
    assert problem == ('import cycle pkg.zoo.a -> pkg.zoo.b: pkg/zoo/a.py:1: pkg.zoo.a imports pkg.zoo.b; '
                       'pkg/zoo/b.py:3: pkg.zoo.b imports pkg.zoo.a')


def test_checker_reports_an_unknown_subpackage(tmp_path):
    root = _fake_package(tmp_path, {})
    (root / 'hub').mkdir()
    (root / 'hub' / '__init__.py').write_text('')
    assert check_layers(root) == [
        f'pkg/hub/ is not in the layer order {LAYERS}; add it to LAYERS in tests/test_layers.py']


# ------------------------------------------------------------------------------ heavy libraries stay lazy

def test_import_regzoo_skips_heavy_libraries(tmp_path):
    """`import regzoo` loads none of the heavy or optional libraries; they load where they are used."""
    code = f'import regzoo, sys; print(sorted(m for m in {HEAVY!r} if m in sys.modules))'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert out.stdout.strip() == '[]'


def test_constants_written_out_instead_of_importing_timm_agree_with_timm():
    """data/ spells out timm's ImageNet normalisation and image extensions so that importing it skips timm."""
    import timm.data

    from regzoo.data.datasets import IMAGE_EXTENSIONS
    from regzoo.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    assert (IMAGENET_MEAN, IMAGENET_STD) == (timm.data.IMAGENET_DEFAULT_MEAN, timm.data.IMAGENET_DEFAULT_STD)
    assert IMAGE_EXTENSIONS == set(timm.data.get_img_extensions(as_set=True))


@pytest.mark.parametrize('argv', [
    ['-m', 'regzoo.validate', '--help'],
    ['-m', 'regzoo.export', '--help'],
    ['-m', 'regzoo.cli.predict', '--help'],
    ['-m', 'regzoo.benchmark', '--help'],
    ['-m', 'regzoo.train', '--help'],
    [str(PACKAGE_DIR.parent / 'train.py'), '--help'],
], ids=['validate', 'export', 'predict', 'benchmark', 'train', 'train.py'])
def test_cli_help_skips_timm_and_torchvision(argv, tmp_path):
    """Printing a command line's --help loads neither timm nor torchvision (checked in the same process)."""
    script = ('import runpy, sys; sys.argv = {argv!r}; '
              'import atexit; atexit.register(lambda: sys.stderr.write("LOADED=" + repr(sorted('
              'm for m in ("timm", "torchvision") if m in sys.modules)) + "\\n"))\n'
              '{run}')
    if argv[0] == '-m':
        run = f'runpy.run_module({argv[1]!r}, run_name="__main__")'
        argv = [argv[1], *argv[2:]]
    else:
        run = f'runpy.run_path({argv[0]!r}, run_name="__main__")'
    out = subprocess.run([sys.executable, '-c', script.format(argv=argv, run=run)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert 'usage:' in out.stdout
    assert 'LOADED=[]' in out.stderr
