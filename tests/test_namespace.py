"""The built wheel, installed in a fresh venv beside a user project with its own `flows/`,
`tasks/` and `serving.py`: both import side by side and the installed entry points work.

The fresh venv must not see this work tree or its editable install, yet must not download
anything either. So its site-packages gets one `.pth` line naming a directory of symlinks to
the dev venv's third-party packages, minus everything of ours (the editable finder, its `.pth`
and our dist-info). A path added by a `.pth` line is not itself scanned for `.pth` files, so
nothing there can bring the editable install back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "mlops", "flows", "tasks", "targets", "serving")
SUBPACKAGES = ("flows", "tasks", "targets", "serving")

pytestmark = pytest.mark.timeout(420)

USER_FILES = {
    "flows/__init__.py": '"""The user\'s own flows package."""\n',
    "flows/train.py": (
        "from tasks import clean\n\n\n"
        "def train(rows):\n"
        "    return {'trained_on': clean(rows), 'by': 'user-flows'}\n"
    ),
    "tasks/__init__.py": (
        "def clean(rows):\n    return [r for r in rows if r is not None]\n\nOWNER = 'user-tasks'\n"
    ),
    "serving.py": "OWNER = 'user-serving'\n",
}

# Run in the fresh venv from the user project; prints where every module came from.
PROBE = """
import importlib.metadata as md, importlib.util, inspect, json, sys
from pathlib import Path

import flows, flows.train, serving, tasks
import mlops_pipeline.flows.register, mlops_pipeline.serving.app, mlops_pipeline.tasks.images
from mlops_pipeline.images import prepare_context

context, wheelhouse = Path(sys.argv[1]), Path(sys.argv[2])
prepare_context(["mlops-pipeline"], wheelhouse, context)
groups = {}
for group in ("mlops.targets", "mlflow.app"):
    groups[group] = {
        ep.name: [ep.dist.name, inspect.getfile(ep.load())]
        for ep in md.entry_points(group=group)
        if ep.dist.name == "mlops-pipeline"
    }
print(json.dumps({
    "user": {
        "flows": flows.__file__, "flows.train": flows.train.__file__,
        "tasks": tasks.__file__, "serving": serving.__file__,
    },
    "user_run": flows.train.train([1, None, 2]),
    "ours": {
        "mlops_pipeline.flows.register": mlops_pipeline.flows.register.__file__,
        "mlops_pipeline.tasks.images": mlops_pipeline.tasks.images.__file__,
        "mlops_pipeline.serving.app": mlops_pipeline.serving.app.__file__,
        "mlops_pipeline.serving.__main__":
            importlib.util.find_spec("mlops_pipeline.serving.__main__").origin,
    },
    "entry_points": groups,
    "dists": sorted(
        str(d.locate_file("")) for d in md.distributions() if d.name == "mlops-pipeline"
    ),
    "meta_path": [type(f).__name__ if not isinstance(f, type) else f.__name__
                  for f in sys.meta_path],
    "sys_path": sys.path,
}))
"""


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)
    assert done.returncode == 0, f"{args[:4]} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built offline from a copy of the sources (no build/ in the shared tree)."""
    source = tmp_path_factory.mktemp("source")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=ignore)
        else:
            shutil.copy2(path, source / name)
    out = tmp_path_factory.mktemp("dist")
    # --no-build-isolation: the venv's setuptools (the dev extra pins a recent one), no download
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
        + ["--quiet", "--wheel-dir", str(out), str(source)]
    )
    (built,) = out.glob("mlops_pipeline-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> dict[str, Path]:
    """A new venv holding the wheel, with the dev venv's third-party packages but none of ours."""
    root = tmp_path_factory.mktemp("fresh")
    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(run([str(python), "-c", purelib]).stdout.strip())
    deps = root / "dev-deps"
    deps.mkdir()
    dev_dirs = {Path(sysconfig.get_path(key)) for key in ("purelib", "platlib")}
    for directory in dev_dirs:
        for entry in directory.iterdir():
            ours = entry.name.startswith(("mlops_pipeline", "__editable__"))
            if ours or entry.suffix == ".pth" or (deps / entry.name).exists():
                continue
            (deps / entry.name).symlink_to(entry)
    (site / "dev-deps.pth").write_text(f"{deps}\n")
    run(
        [sys.executable, "-m", "pip", "--python", str(python), "install"]
        + ["--no-deps", "--no-index", "--quiet", str(wheel)]
    )
    return {"root": root, "python": python, "bin": venv / "bin", "site": site}


@pytest.fixture(scope="module")
def user_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Prefect-style project whose module names collide with ours."""
    project = tmp_path_factory.mktemp("user-project")
    for name, text in USER_FILES.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    return project


def user_env(fresh_venv: dict[str, Path], project: Path) -> dict[str, str]:
    """The user's shell: the fresh venv active, their project first on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONHOME", "VIRTUAL_ENV"}}
    env |= {
        "PATH": f"{fresh_venv['bin']}{os.pathsep}{env.get('PATH', '')}",
        "VIRTUAL_ENV": str(fresh_venv["bin"].parent),
        "PYTHONPATH": str(project),
        "PYTHONDONTWRITEBYTECODE": "1",
        "MLOPS_HOME": str(project / ".mlops"),
    }
    return env


def test_wheel_installs_one_namespace_only(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"mlops_pipeline", "mlops_pipeline-0.1.0.dist-info"}, top
    for package in SUBPACKAGES:
        assert f"mlops_pipeline/{package}/__init__.py" in names
    assert "mlops_pipeline/serving/__main__.py" in names


def test_user_packages_and_ours_import_side_by_side(
    fresh_venv: dict[str, Path], user_project: Path, tmp_path: Path
) -> None:
    site, ours = fresh_venv["site"], fresh_venv["site"] / "mlops_pipeline"
    context, wheelhouse = tmp_path / "context", tmp_path / "wheelhouse"
    context.mkdir()
    wheelhouse.mkdir()
    done = run(
        [str(fresh_venv["python"]), "-c", PROBE, str(context), str(wheelhouse)],
        cwd=user_project,
        env=user_env(fresh_venv, user_project),
    )
    probe = json.loads(done.stdout.strip().splitlines()[-1])

    # nothing of the work tree or its editable install is visible in the fresh venv
    assert "_EditableFinder" not in probe["meta_path"]
    assert REPO not in {(user_project / entry).resolve() for entry in probe["sys_path"]}
    assert probe["dists"] == [str(site)]

    assert probe["user"] == {
        "flows": str(user_project / "flows" / "__init__.py"),
        "flows.train": str(user_project / "flows" / "train.py"),
        "tasks": str(user_project / "tasks" / "__init__.py"),
        "serving": str(user_project / "serving.py"),
    }
    assert probe["user_run"] == {"trained_on": [1, 2], "by": "user-flows"}
    assert probe["ours"] == {
        "mlops_pipeline.flows.register": str(ours / "flows" / "register.py"),
        "mlops_pipeline.tasks.images": str(ours / "tasks" / "images.py"),
        "mlops_pipeline.serving.app": str(ours / "serving" / "app.py"),
        "mlops_pipeline.serving.__main__": str(ours / "serving" / "__main__.py"),
    }

    assert probe["entry_points"] == {
        "mlops.targets": {
            "local": ["mlops-pipeline", str(ours / "targets" / "local.py")],
            "docker": ["mlops-pipeline", str(ours / "targets" / "docker.py")],
            "batch": ["mlops-pipeline", str(ours / "targets" / "batch.py")],
            "kubernetes": ["mlops-pipeline", str(ours / "targets" / "kubernetes.py")],
            "iotedge": ["mlops-pipeline", str(ours / "targets" / "iotedge.py")],
        },
        "mlflow.app": {"mlops-guard": ["mlops-pipeline", str(ours / "guard.py")]},
    }

    # build-image's context carries our scoring service, not the user's serving.py
    shipped = context / "mlops_pipeline" / "serving"
    assert (shipped / "app.py").read_text() == (ours / "serving" / "app.py").read_text()
    assert (shipped / "__main__.py").read_text() == (ours / "serving" / "__main__.py").read_text()
    assert not (context / "serving.py").exists()


def test_installed_console_script_runs_beside_the_user_project(
    fresh_venv: dict[str, Path], user_project: Path, tmp_path: Path
) -> None:
    mlops = fresh_venv["bin"] / "mlops"
    assert mlops.read_text().splitlines()[0] == f"#!{fresh_venv['python']}"
    env = user_env(fresh_venv, user_project)
    helped = run([str(mlops), "--help"], cwd=user_project, env=env)
    for command in ("register", "deploy", "monitor", "build-image"):
        assert command in helped.stdout

    # a real command through the installed flows/tasks, with the user's modules first on the path
    reference, current = tmp_path / "reference.csv", tmp_path / "current.csv"
    rows = "rooms,price\n" + "".join(f"{i % 5 + 1},{100 + i}\n" for i in range(200))
    reference.write_text(rows)
    current.write_text(rows)
    drift = run(
        [str(mlops), "drift", "--reference", str(reference), "--current", str(current), "--json"],
        cwd=user_project,
        env=env,
    )
    verdict = json.loads(drift.stdout)
    assert verdict["drift"] is False
    assert {f["name"] for f in verdict["features"]} == {"rooms", "price"}
