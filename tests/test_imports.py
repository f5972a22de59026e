"""Import hygiene of the wsnn package.

Every module imports in a fresh interpreter; and the static import graph
(read with `ast`, so without importing anything) has no cycle and no library
module importing a command-line one. A module is command-line when it imports
`absl.app` (at any level, a function's body included) or runs as a script
(`if __name__ == "__main__":`); every other module is library.
"""

import ast
import os
import subprocess
import sys

import wsnn

PACKAGE_DIR = os.path.dirname(os.path.abspath(wsnn.__file__))


def _modules():
    """{module name: file} for every module of the package (a package's name for its __init__.py)."""
    found = {}
    for directory, subdirs, files in os.walk(PACKAGE_DIR):
        subdirs[:] = sorted(d for d in subdirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                parts = ["wsnn"] + os.path.relpath(path, PACKAGE_DIR)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts.pop()
                found[".".join(parts)] = path
    return found


def _is_main_guard(node):
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators))


def _graph():
    """(edges: {module: sorted wsnn modules it imports}, the set of command-line modules)."""
    modules = _modules()
    edges, commands = {}, set()
    for module, path in modules.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
                if "absl.app" in names:
                    commands.add(module)
                targets.update(names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                    + ([base] if base else []))
                names = [alias.name for alias in node.names]
                if base == "absl.app" or (base == "absl" and "app" in names):
                    commands.add(module)
                # `from wsnn import x` imports module wsnn.x when there is one, else a name of wsnn.
                targets.update(f"{base}.{name}" if f"{base}.{name}" in modules else base for name in names)
            elif _is_main_guard(node):
                commands.add(module)
        edges[module] = sorted(t for t in targets if t in modules and t != module)
    return edges, commands


def _cycles(edges):
    """One cycle per strongly connected component of more than one module (Tarjan), as a path."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                cycles.append(_path_within(sorted(component), edges))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return cycles


def _path_within(component, edges):
    """A cycle through the first module of a strongly connected component, staying inside it."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        node = frontier.pop(0)
        for target in edges[node]:
            if target == start:
                return paths[node] + [start]
            if target in members and target not in paths:
                paths[target] = paths[node] + [target]
                frontier.append(target)
    raise AssertionError(f"no cycle through {start}")


def test_every_module_imports_in_a_fresh_interpreter():
    modules = sorted(_modules())
    script = ("import importlib, sys, traceback\n"
              "for name in sys.argv[1:]:\n"
              "    try:\n"
              "        importlib.import_module(name)\n"
              "    except Exception:\n"
              "        print(f'{name}: {traceback.format_exc().strip().splitlines()[-1]}')\n")
    result = subprocess.run([sys.executable, "-c", script, *modules], capture_output=True, text=True,
                            check=False, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == "", f"modules that fail to import:\n{result.stdout}"


def test_graph_reader_on_this_package():
    edges, commands = _graph()
    assert "wsnn.data.preparation" in edges["wsnn.prepare"]      # from wsnn.data import preparation
    assert "wsnn.data.normalize" in edges["wsnn.data.preparation"]
    assert {"wsnn.prepare", "wsnn.annotate", "wsnn.blend", "wsnn.refine"} <= commands
    assert not {"wsnn.data.preparation", "wsnn.tagger", "wsnn.refined_tags"} & commands


def test_no_import_cycle():
    cycles = _cycles(_graph()[0])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_library_module_imports_a_command_line_module():
    edges, commands = _graph()
    bad = [f"{m} -> {t}" for m in sorted(edges) if m not in commands for t in edges[m] if t in commands]
    assert not bad, ("library modules that import command-line modules (which import absl.app or run as "
                     "scripts):\n" + "\n".join(bad))
