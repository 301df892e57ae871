"""The scheduler examples in ``examples/`` stay correct.

Airflow and Dagster are too heavy to install for these tests, so each Python example is
loaded with small stand-in ``airflow``/``dagster`` modules in ``sys.modules`` whose decorators
return the plain function: what is checked is the example's own code (the library call and
what it does with the ``Report``), run against the sandbox; the orchestrator's part is
checked only as far as names and call shapes.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import py_compile
import shlex
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import flywheel_import
from flywheel_import.cli import build_parser
from flywheel_import.config import load_config
from flywheel_import.pipeline import run_import_async
from flywheel_import.sandbox import Sandbox

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
SAMPLE = REPO / "sample_data" / "events.csv"
CONFIG = REPO / "configs" / "example.yaml"
KEY = "examples-key"
PYTHON_EXAMPLES = {"airflow_dag.py": "airflow", "dagster_asset.py": "dagster"}


# --- stand-ins for the orchestrators ---------------------------------------------------------


def _passthrough(*args: Any, **kwargs: Any) -> Any:
    """``@deco`` and ``@deco(...)`` alike return the function itself."""
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return args[0]
    return lambda fn: fn


def _airflow_task(*args: Any, **kwargs: Any) -> Any:
    def wrap(fn: Callable[..., Any]) -> Any:
        # The one part of TaskFlow the DAG uses: ``.expand``, recorded for the test.
        fn.expanded = []  # type: ignore[attr-defined]
        fn.expand = lambda **kw: fn.expanded.append(kw)  # type: ignore[attr-defined]
        return fn

    if len(args) == 1 and callable(args[0]) and not kwargs:
        return wrap(args[0])
    return wrap


class _MaterializeResult:
    def __init__(self, *, metadata: dict[str, Any] | None = None) -> None:
        self.metadata = metadata or {}


def _stand_ins() -> dict[str, types.ModuleType]:
    airflow = types.ModuleType("airflow")
    decorators = types.ModuleType("airflow.decorators")
    decorators.dag = _passthrough  # type: ignore[attr-defined]
    decorators.task = _airflow_task  # type: ignore[attr-defined]
    airflow.decorators = decorators  # type: ignore[attr-defined]
    dagster = types.ModuleType("dagster")
    dagster.asset = _passthrough  # type: ignore[attr-defined]
    dagster.MaterializeResult = _MaterializeResult  # type: ignore[attr-defined]
    return {"airflow": airflow, "airflow.decorators": decorators, "dagster": dagster}


@pytest.fixture
def load_example(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Any]:
    for name, module in _stand_ins().items():
        monkeypatch.setitem(sys.modules, name, module)

    def load(filename: str) -> Any:
        spec = importlib.util.spec_from_file_location(
            f"example_{filename[:-3]}", EXAMPLES / filename
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """The bundled example's mapping with every output inside ``tmp_path``."""
    text = CONFIG.read_text(encoding="utf-8")
    text = text.replace("../sample_data/events.csv", str(SAMPLE))
    for name in ("rejects.csv", "report.json", ".flywheel-import/state.db"):
        text = text.replace(f"../{name}", str(tmp_path / "out" / name))
    path = tmp_path / "import.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Sandbox]:
    with Sandbox(key=KEY, db=tmp_path / "sandbox.db") as sb:
        monkeypatch.setenv("FLYWHEEL_API_URL", sb.url)
        monkeypatch.setenv("FLYWHEEL_API_KEY", KEY)
        yield sb


# --- static checks -------------------------------------------------------------------------


def _imports(tree: ast.Module) -> tuple[set[str], set[str], set[str]]:
    """Top-level modules imported, names taken from flywheel_import, its local aliases."""
    modules: set[str] = set()
    names: set[str] = set()
    aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                modules.add(a.name.split(".")[0])
                if a.name == "flywheel_import":
                    aliases.add(a.asname or a.name)
                elif a.name.startswith("flywheel_import."):
                    names.add(a.name)  # a submodule: never public
        elif isinstance(node, ast.ImportFrom):
            assert node.module is not None and node.level == 0
            modules.add(node.module.split(".")[0])
            if node.module == "flywheel_import":
                names.update(a.name for a in node.names)
            elif node.module.startswith("flywheel_import."):
                names.add(node.module)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
        ):
            names.add(node.attr)
    return modules, names, aliases


def _run_import_keywords(tree: ast.Module, aliases: set[str]) -> list[str]:
    found: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        named = (
            isinstance(f, ast.Attribute)
            and f.attr == "run_import"
            and isinstance(f.value, ast.Name)
            and f.value.id in aliases
        ) or (isinstance(f, ast.Name) and f.id == "run_import")
        if named:
            found.extend(k.arg for k in node.keywords if k.arg is not None)
    return found


@pytest.mark.parametrize("filename", sorted(PYTHON_EXAMPLES))
def test_python_example_compiles_and_uses_only_public_library_names(
    filename: str, tmp_path: Path
) -> None:
    path = EXAMPLES / filename
    py_compile.compile(str(path), cfile=str(tmp_path / "x.pyc"), doraise=True)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules, names, aliases = _imports(tree)
    assert modules - set(sys.stdlib_module_names) == {"flywheel_import", PYTHON_EXAMPLES[filename]}
    assert names, "the example uses the library"
    assert names <= set(flywheel_import.__all__), names - set(flywheel_import.__all__)
    keywords = _run_import_keywords(tree, aliases)
    assert keywords, "the example calls run_import with options"
    # run_import passes its options on to run_import_async, whose signature names them.
    accepted = {
        p.name
        for p in inspect.signature(run_import_async).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    assert set(keywords) <= accepted, set(keywords) - accepted


# --- the Python examples, run ----------------------------------------------------------------


def test_airflow_shards_together_send_every_row_once(
    load_example: Callable[[str], Any],
    sandbox: Sandbox,
    config: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dag = load_example("airflow_dag.py")
    assert dag.import_shard.expanded == [{"k": list(range(dag.N))}]
    monkeypatch.setattr(dag, "N", 2)
    monkeypatch.setattr(dag, "API_RATE", 0.0)
    monkeypatch.setattr(dag, "CONFIG", str(config))
    monkeypatch.setattr(dag, "INPUTS", [str(SAMPLE)])
    monkeypatch.setattr(dag, "SHARED", str(tmp_path))
    results = [dag.import_shard(k) for k in range(2)]
    assert all(r["completed"] is True for r in results)
    assert all(r["accepted"] > 0 for r in results)
    assert sum(r["accepted"] for r in results) == sandbox.stats()["stored"]
    assert (tmp_path / "state.shard-0-of-2.db").exists()
    assert (tmp_path / "state.shard-1-of-2.db").exists()
    again = dag.import_shard(0)  # a retried task resumes its shard: nothing sent twice
    assert again["accepted"] == 0
    assert sum(r["accepted"] for r in results) == sandbox.stats()["stored"]


def test_airflow_task_fails_when_the_api_refuses_the_key(
    load_example: Callable[[str], Any],
    sandbox: Sandbox,
    config: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dag = load_example("airflow_dag.py")
    monkeypatch.setenv("FLYWHEEL_API_KEY", "not-the-key")
    monkeypatch.setattr(dag, "CONFIG", str(config))
    monkeypatch.setattr(dag, "INPUTS", [str(SAMPLE)])
    monkeypatch.setattr(dag, "SHARED", str(tmp_path))
    with pytest.raises(flywheel_import.ApiAbort):
        dag.import_shard(0)


def test_dagster_asset_returns_the_report_as_metadata(
    load_example: Callable[[str], Any],
    sandbox: Sandbox,
    config: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = load_example("dagster_asset.py")
    monkeypatch.setattr(module, "CONFIG", str(config))
    monkeypatch.setattr(module, "INPUTS", [str(SAMPLE)])
    monkeypatch.setattr(module, "STATE", str(tmp_path / "state.db"))
    monkeypatch.setattr(module, "REJECTS", str(tmp_path / "rejects.csv"))
    result = module.flywheel_events()
    meta = result.metadata
    assert meta["completed"] is True
    assert meta["accepted"] == sandbox.stats()["stored"] > 0
    assert meta["rows_read"] == meta["accepted"] + meta["rejected"]
    assert meta["rejects_path"] == str(tmp_path / "rejects.csv")


# --- the Kubernetes Job and the nightly command ----------------------------------------------


def test_k8s_example_is_an_indexed_job_whose_command_the_cli_accepts() -> None:
    docs = list(yaml.safe_load_all((EXAMPLES / "k8s_indexed_job.yaml").read_text()))
    assert len(docs) == 1
    job = docs[0]
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    n = spec["completions"]
    assert spec["parallelism"] <= n
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > load_config(CONFIG).api.timeout
    (container,) = pod["containers"]
    assert container["command"] == ["flywheel-import"]
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["FLYWHEEL_API_KEY"]["valueFrom"]
    for k in (0, n - 1):
        argv = [a.replace("$(JOB_COMPLETION_INDEX)", str(k)) for a in container["args"]]
        args = build_parser().parse_args(argv)
        assert (args.command, args.shard) == ("run", f"{k}/{n}")
        assert args.state and args.rejects.endswith(f"-{k}.csv")


def test_nightly_command_parses_and_its_mapping_has_a_watermark() -> None:
    script = (EXAMPLES / "nightly.sh").read_text()
    (line,) = [x for x in script.splitlines() if x.startswith("exec flywheel-import ")]
    words = shlex.split(line)[2:]
    argv = [w for w in words if not w.startswith((">", "2>"))]
    assert len(argv) == len(words) - 2  # both streams go to the log, appended
    assert ">>/var/log/flywheel-import/nightly.log" in words
    args = build_parser().parse_args(argv)
    assert args.command == "run" and args.no_progress
    config = load_config(EXAMPLES / "nightly.yaml")
    assert config.mapping.watermark == "ts"
    assert config.output.state is not None
    cron = [
        x
        for x in (EXAMPLES / "cron.txt").read_text().splitlines()
        if x.strip() and not x.startswith("#")
    ]
    assert len(cron) == 1 and cron[0].split()[5].endswith("/nightly.sh")
    assert len(cron[0].split()) == 6
