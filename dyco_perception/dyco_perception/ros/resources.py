"""Finding the files shipped with the packages (config/, demo/, checkpoints/, msg/) both in a
source checkout and in an installed workspace, and the files a user names in a parameter."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]


def _share_dir(package: str) -> Path | None:
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(package))
    except (ImportError, LookupError, ValueError):
        return None


def search_roots(package: str = "dyco_perception") -> list[Path]:
    """Where the package's own relative paths are looked up: the repository, the share."""
    roots = [REPO_ROOT if package == "dyco_perception" else REPO_ROOT / package]
    share = _share_dir(package)
    if share is not None:
        roots.append(share)
    return roots


def package_file(relative: str, package: str = "dyco_perception") -> Path:
    """The first existing `relative` under `search_roots`; the repository path if none exists
    (so that error messages name the expected place). Absolute paths are returned as given."""
    path = Path(relative).expanduser()
    if path.is_absolute():
        return path
    candidates = [root / path for root in search_roots(package)]
    return next((c for c in candidates if c.exists()), candidates[0])


def names_working_directory(path: str) -> bool:
    """True for `./x`, `../x` (and `.`, `..`): paths meant relative to the working directory."""
    return path in (".", "..") or path.startswith(("./", "../"))


def user_path_candidates(path: str, package: str = "dyco_perception") -> list[Path]:
    """Where a file named in a node parameter (e.g. `checkpoint`) is looked for, in order:
    - absolute (or `~/...`): as given;
    - starting with `./` or `../`: the working directory, and only there;
    - any other relative path: the package share directory (`checkpoints/NAME.safetensors`
      names a shipped checkpoint), then the source repository (a checkout whose new files are
      not installed yet). Never the working directory: a file there cannot shadow a shipped one.
    """
    expanded = Path(path).expanduser()
    if expanded.is_absolute():
        return [expanded]
    if names_working_directory(path):
        return [Path(os.path.normpath(Path.cwd() / path))]
    roots = []
    share = _share_dir(package)
    if share is not None:
        roots.append(share)
    repo = REPO_ROOT if package == "dyco_perception" else REPO_ROOT / package
    if repo not in roots:
        roots.append(repo)
    return [root / expanded for root in roots]
