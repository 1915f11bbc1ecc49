"""Build configuration that setup.cfg cannot express: the package list, found rather than kept by hand.

The repository root is the package `clipbridge` (setup.cfg: package_dir clipbridge = .), so the
sub-packages setuptools finds under it (bridge, bridge.methods, ...) are installed as clipbridge.<name>,
and this file, which sits in the package's folder, is left out of it.
"""
from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class BuildPy(build_py):
    """build_py without clipbridge/setup.py."""

    def find_package_modules(self, package, package_dir):
        return [entry for entry in super().find_package_modules(package, package_dir)
                if entry[:2] != ("clipbridge", "setup")]


setup(packages=["clipbridge"] + [f"clipbridge.{name}" for name in
                                 find_packages(exclude=("tests", "tests.*", "build", "build.*"))],
      cmdclass={"build_py": BuildPy})
