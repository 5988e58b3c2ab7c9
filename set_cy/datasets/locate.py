"""Where the named data sets of :mod:`set_cy.datasets` are looked for.

This module holds the registry of named data sets (:data:`DATASET_NAMES`, the scikit-feature file
names, the NIPS-2003 and IDX file sets, where each comes from) and the search for their files: in
the ``data_dir`` argument, in the folders of ``$SET_CY_DATA`` (separated by ``os.pathsep``), in
``./data`` and, for Fashion-MNIST only, in ``/usr/share/datasets/fashion-mnist``; in each folder
the conventional subfolder first, then the folder itself, matching file names case-insensitively.
It reports what is found (:func:`available_datasets`) and builds the error that lists every place
searched. Nothing is ever downloaded.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

__all__ = ["available_datasets", "DATASET_NAMES"]


PathLike = Union[str, "os.PathLike[str]"]

_ENV_VAR = "SET_CY_DATA"
_DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

# canonical name -> file name in the scikit-feature collection
_SCIKIT_FEATURE = {
    "allaml": "ALLAML.mat",
    "glioma": "GLIOMA.mat",
    "colon": "colon.mat",
    "leukemia": "leukemia.mat",
    "lymphoma": "lymphoma.mat",
    "lung_small": "lung_small.mat",
    "arcene": "arcene.mat",
    "madelon": "madelon.mat",
}
_IDX_SETS = {"mnist": "mnist", "fashion-mnist": "fashion-mnist"}  # name -> subfolder
_MADELON_NIPS_FILES = (
    "madelon_train.data",
    "madelon_train.labels",
    "madelon_valid.data",
    "madelon_valid.labels",
)
_IDX_PARTS = (
    ("train", "images", 3),
    ("train", "labels", 1),
    ("t10k", "images", 3),
    ("t10k", "labels", 1),
)

#: Every name accepted by :func:`load_dataset` (case-insensitive, ``-`` and ``_`` interchangeable).
DATASET_NAMES: Tuple[str, ...] = tuple(_SCIKIT_FEATURE) + ("madelon-nips", "mnist", "fashion-mnist", "synthetic")

_SOURCES = {
    "scikit-feature": (
        "the scikit-feature repository's data sets (https://jundongl.github.io/scikit-feature/datasets.html), "
        "GPL-2.0; put the .mat files in <data>/scikit-feature/"
    ),
    "nips2003": (
        "the NIPS 2003 feature selection challenge, UCI 'Madelon' "
        "(https://archive.ics.uci.edu/dataset/171/madelon); put madelon_{train,valid}.{data,labels} "
        "in <data>/nips2003/"
    ),
    "mnist": (
        "MNIST (http://yann.lecun.com/exdb/mnist/); put the four *-ubyte(.gz) IDX files in <data>/mnist/"
    ),
    "fashion-mnist": (
        "Fashion-MNIST (https://github.com/zalandoresearch/fashion-mnist, MIT); on Debian/Ubuntu "
        "`apt-get install dataset-fashion-mnist` installs it in /usr/share/datasets/fashion-mnist, "
        "or put the four *-ubyte(.gz) IDX files in <data>/fashion-mnist/"
    ),
}


def _norm_name(name: str) -> str:
    return name.strip().lower().replace("-", "").replace("_", "")


_NAME_LOOKUP = {_norm_name(n): n for n in DATASET_NAMES}
_NAME_LOOKUP.update({"madelonnips2003": "madelon-nips", "nipsmadelon": "madelon-nips", "fmnist": "fashion-mnist"})


def _base_dirs(data_dir: Optional[PathLike], name: Optional[str] = None) -> List[Tuple[Path, str]]:
    """The folders searched, in order, each with a short note of where it came from."""
    bases: List[Tuple[Path, str]] = []
    if data_dir is not None:
        bases.append((Path(data_dir).expanduser(), "data_dir argument"))
    env = os.environ.get(_ENV_VAR, "")
    for part in env.split(os.pathsep):
        if part.strip():
            bases.append((Path(part.strip()).expanduser(), f"${_ENV_VAR}"))
    bases.append((Path.cwd() / "data", "./data"))
    if name == "fashion-mnist":
        bases.append((_DEBIAN_FASHION_DIR, "Debian package dataset-fashion-mnist"))
    seen = set()
    unique = []
    for b, why in bases:
        key = os.path.abspath(b)
        if key not in seen:
            seen.add(key)
            unique.append((b, why))
    return unique


def _subfolder(name: str) -> str:
    if name in _SCIKIT_FEATURE:
        return "scikit-feature"
    if name == "madelon-nips":
        return "nips2003"
    return _IDX_SETS[name]


def _candidate_dirs(name: str, data_dir: Optional[PathLike]) -> List[Tuple[Path, str]]:
    sub = _subfolder(name)
    out = []
    for base, why in _base_dirs(data_dir, name):
        out.append((base / sub, why))
        out.append((base, why))
    return out


def _find_file_ci(folder: Path, filename: str) -> Optional[Path]:
    """``folder/filename``, matching the file name case-insensitively if needed."""
    p = folder / filename
    if p.is_file():
        return p
    try:
        entries = list(folder.iterdir()) if folder.is_dir() else []
    except OSError:
        return None
    low = filename.lower()
    for e in sorted(entries):
        if e.name.lower() == low and e.is_file():
            return e
    return None


def _idx_files(folder: Path) -> Optional[Dict[str, Path]]:
    """The four IDX files in ``folder`` (``.gz`` or raw, ``-`` or ``.`` before ``idxN``), or None."""
    found: Dict[str, Path] = {}
    for split, kind, nd in _IDX_PARTS:
        hit = None
        for sep in ("-", "."):
            for ext in (".gz", ""):
                hit = _find_file_ci(folder, f"{split}-{kind}{sep}idx{nd}-ubyte{ext}")
                if hit is not None:
                    break
            if hit is not None:
                break
        if hit is None:
            return None
        found[f"{split}-{kind}"] = hit
    return found


def _locate(name: str, data_dir: Optional[PathLike]) -> Tuple[Optional[Path], List[str]]:
    """Return (path, places looked). ``path`` is a .mat file or a folder of the data set's files."""
    looked: List[str] = []
    for folder, why in _candidate_dirs(name, data_dir):
        if name in _SCIKIT_FEATURE:
            fn = _SCIKIT_FEATURE[name]
            hit = _find_file_ci(folder, fn)
            looked.append(f"{folder / fn}  ({why})")
            if hit is not None:
                return hit, looked
        elif name == "madelon-nips":
            looked.append(f"{folder}/madelon_{{train,valid}}.{{data,labels}}  ({why})")
            if all(_find_file_ci(folder, f) is not None for f in _MADELON_NIPS_FILES):
                return folder, looked
        else:
            looked.append(f"{folder}/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte[.gz]  ({why})")
            if _idx_files(folder) is not None:
                return folder, looked
    return None, looked


def _not_found(name: str, looked: List[str]) -> FileNotFoundError:
    key = _subfolder(name)  # the keys of _SOURCES are the conventional subfolders
    env = os.environ.get(_ENV_VAR)
    env_note = f"${_ENV_VAR} is {env!r}" if env else f"${_ENV_VAR} is not set"
    lines = [f"data set {name!r} not found ({env_note}; current directory {os.getcwd()}). Looked in:"]
    lines += [f"  - {p}" for p in looked]
    lines.append(
        f"To fix: pass data_dir=..., or set {_ENV_VAR}=/path/to/data (a folder with scikit-feature/, "
        "nips2003/, mnist/, fashion-mnist/ subfolders), or put the files under ./data/."
    )
    lines.append(f"The files come from {_SOURCES[key]}. set_cy never downloads data.")
    return FileNotFoundError("\n".join(lines))


def available_datasets(data_dir: Optional[PathLike] = None) -> Dict[str, Optional[Path]]:
    """Report where each file-based named data set is found.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Extra folder searched first, as in :func:`load_dataset`.

    Returns
    -------
    dict
        Maps every file-based name of :data:`DATASET_NAMES` to the ``.mat`` file or the folder
        that :func:`load_dataset` would read, or to ``None`` when it is not found.
        ``"synthetic"`` needs no files and is not listed.
    """
    return {n: _locate(n, data_dir)[0] for n in DATASET_NAMES if n != "synthetic"}
