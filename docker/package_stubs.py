"""Empty stand-ins for every package pyproject.toml lists (and its readme), so that a Docker
build installs the project's dependencies in a layer of their own, which only a change of
pyproject.toml or the lock file rebuilds, before the sources are copied in."""

import sys
import tomllib
from pathlib import Path


def package_dirs(pyproject: Path) -> list[Path]:
    """The folder of each package in [tool.setuptools] packages (package-dir honoured)."""
    setuptools = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]
    roots = setuptools.get("package-dir", {})
    folders = []
    for package in setuptools["packages"]:
        root, *rest = package.split(".")
        folders.append(Path(roots.get(root, root), *rest))
    return folders


if __name__ == "__main__":
    pyproject = Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml")
    for folder in package_dirs(pyproject):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__init__.py").touch()
    readme = tomllib.loads(pyproject.read_text())["project"].get("readme")
    if isinstance(readme, str):
        Path(readme).touch()
