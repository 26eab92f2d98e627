"""Finding the files shipped with the packages (config/, demo/, checkpoints/, msg/) both in a
source checkout and in an installed workspace, with one search order."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]


def _share_dir(package: str) -> Path | None:
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(package))
    except (ImportError, LookupError, ValueError):
        return None


def search_roots(package: str = "dyco_perception", cwd: bool = False) -> list[Path]:
    """Where relative paths are looked up: (the working directory,) the repository, the share."""
    roots = [Path.cwd()] if cwd else []
    repo_dir = REPO_ROOT if package == "dyco_perception" else REPO_ROOT / package
    roots.append(repo_dir)
    share = _share_dir(package)
    if share is not None:
        roots.append(share)
    return roots


def package_file(relative: str, package: str = "dyco_perception", cwd: bool = False) -> Path:
    """The first existing `relative` under `search_roots`; the repository path if none exists
    (so that error messages name the expected place). Absolute paths are returned as given."""
    path = Path(relative).expanduser()
    if path.is_absolute():
        return path
    candidates = [root / path for root in search_roots(package, cwd)]
    return next((c for c in candidates if c.exists()), candidates[1 if cwd else 0])
