"""Packaging hook: install ``certstorm-locust.pth`` beside the packages, in regular and editable installs,
so that ``locust --help`` lists the swarm's options (why: ``loadgen/_locust_help.py``). All other metadata
lives in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH = Path(__file__).with_name("certstorm-locust.pth")


class BuildPyWithPth(build_py):
    """A regular wheel takes the .pth from the root of build_lib."""

    def run(self):
        super().run()
        self.copy_file(str(PTH), str(Path(self.build_lib, PTH.name)))


class EditableWheelWithPth(editable_wheel):
    """An editable wheel is packed from the directory this hook fills; without the hook (a future setuptools
    may rename it) the install still works, only ``locust --help`` lacks the swarm's options."""

    def _install_namespaces(self, installation_dir, pth_prefix):
        super()._install_namespaces(installation_dir, pth_prefix)
        shutil.copy(PTH, Path(installation_dir, PTH.name))


setup(cmdclass={"build_py": BuildPyWithPth, "editable_wheel": EditableWheelWithPth})
