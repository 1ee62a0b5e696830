"""`platform/` is a source folder, never a package: `import platform` must stay the stdlib's."""

import subprocess
import sys
import sysconfig

from tests.conftest import REPO


def test_no_platform_package_marker():
    assert not (REPO / "platform" / "__init__.py").exists()


def test_import_platform_from_repo_root_is_stdlib():
    # Ray puts the working dir first on sys.path; reproduce that.
    code = "import platform, sys; print(platform.__file__); print(platform.python_version())"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, check=True)
    path, version = out.stdout.split()
    assert path.startswith(sysconfig.get_paths()["stdlib"])
    assert version == ".".join(map(str, sys.version_info[:3]))


def test_voxray_is_importable_from_platform_folder():
    import voxray

    assert voxray.__file__.startswith(str(REPO / "platform" / "voxray"))
