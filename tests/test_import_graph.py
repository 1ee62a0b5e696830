"""The import rule of docs/architecture.md, checked on every module's imports (top-level and
inside functions): a package imports only from its own layer or the layers below it."""

from __future__ import annotations

import ast

from tests.conftest import REPO

PACKAGE = REPO / "platform" / "voxray"

# Lowest first. Inference (synthesize, predict_mels, evaluate) never reaches train/ or tune/.
LAYERS = [
    {"audio", "uri", "dsp", "text", "codeswitch", "cleaning", "config", "labels", "cluster"},
    {"data", "models", "losses", "codec", "export"},
    {"synthesize", "predict_mels", "evaluate"},
    {"train"},
    {"tune"},
    {"cli"},
]


def layer(name: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if name in names)


def imports(path) -> set[str]:
    """The voxray top-level modules/packages a file imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("voxray"):
            names = [node.module] if node.module != "voxray" else [f"voxray.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("voxray.")]
        found.update(name.split(".")[1] for name in names if name.count("."))
    return found


def test_every_module_imports_only_its_layer_or_below():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.name == "__init__.py" and len(relative.parts) == 1:
            continue
        own = relative.parts[0].removesuffix(".py")
        for target in imports(path) - {own}:
            if layer(target) > layer(own):
                wrong.append(f"{relative} imports voxray.{target}")
    assert not wrong, wrong


def test_every_package_has_a_layer():
    names = {p.name.removesuffix(".py") for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or p.is_dir()) and not p.name.startswith("__")}
    assert names == set().union(*LAYERS), names ^ set().union(*LAYERS)
