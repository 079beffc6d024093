"""Imports go downward only: no module imports one that imports it back, lazily or not (e.g.
train -> evaluate -> train). The graph is read from the source (every `import` statement,
also inside functions), and the entry modules are imported in fresh interpreters."""
import ast
import os
import subprocess
import sys

import pytest

from conftest import ROOT

PACKAGES = ("fdeblur", "input_pipeline")


def _modules() -> dict[str, str]:
  """dotted name -> file, for every module of the project's packages."""
  out = {}
  for package in PACKAGES:
    for root, _, files in os.walk(os.path.join(ROOT, package)):
      for f in files:
        if f.endswith(".py"):
          rel = os.path.relpath(os.path.join(root, f), ROOT)[:-3].replace(os.sep, ".")
          out[rel.removesuffix(".__init__")] = os.path.join(root, f)
  return out


def import_graph() -> dict[str, set[str]]:
  modules = _modules()
  graph = {}
  for name, path in modules.items():
    targets = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
      if isinstance(node, ast.Import):
        targets |= {a.name for a in node.names}
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        # `from pkg import mod` imports the module pkg.mod when it exists, else names of pkg
        targets |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                    else node.module for a in node.names}
    graph[name] = {t for t in targets if t in modules and t != name}
  return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Every elementary cycle found by a depth-first search (one per back edge)."""
  found, state = [], {}

  def visit(node, path):
    state[node] = "open"
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == "open":
        found.append(path[path.index(nxt):] + [nxt])
      elif nxt not in state:
        visit(nxt, path + [nxt])
    state[node] = "done"

  for node in sorted(graph):
    if node not in state:
      visit(node, [node])
  return found


def test_cycle_finder_finds_a_planted_cycle():
  graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
  assert cycles(graph) == [["a", "b", "c", "a"]]
  assert cycles({"a": {"b"}, "b": set()}) == []


def test_project_import_graph_has_no_cycle():
  graph = import_graph()
  assert "fdeblur.state" in graph["fdeblur.train"]  # the graph is read
  # a package's own submodules importing their package's __init__ is no cycle of concern
  pruned = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
  assert cycles(pruned) == []


def test_layers_train_evaluate_deblur_do_not_import_each_other():
  graph = import_graph()
  entries = {"fdeblur.train", "fdeblur.evaluate", "fdeblur.deblur"}
  for e in entries:
    assert not graph[e] & entries, (e, graph[e] & entries)
  for low in ("fdeblur.state", "fdeblur.inference", "fdeblur.protocols",
              "fdeblur.face_analysis", "fdeblur.report"):
    assert not graph[low] & (entries | {"fdeblur.main"}), low


@pytest.mark.parametrize("order", [
    ("fdeblur.evaluate", "fdeblur.train"), ("fdeblur.deblur", "fdeblur.state"),
    ("fdeblur.inference", "fdeblur.main"), ("fdeblur.report", "fdeblur.evaluate")])
def test_modules_import_in_a_fresh_interpreter(order):
  code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in order)
  r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                     timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert r.returncode == 0, r.stderr[-2000:]
