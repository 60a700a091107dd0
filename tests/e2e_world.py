"""Builds the tiny world the VS Code end-to-end test serves (.ci/vscode-e2e.sh): a random Llama base
and its core + python/rust/javascript packs (the tests' tiny_world), in a folder, and prints as JSON
the VS Code settings and environment that point `mole-lsp serve` at it, offline.

    python tests/e2e_world.py OUT_DIR

Rebuilding an existing OUT_DIR is skipped (the folder is a cache); delete it to start over.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def build(root: Path) -> dict[str, object]:
    from lsp_fixtures import build_tiny_world

    base_dir, packs_dir = root / "tiny-base", root / "tiny-packs"
    if not (packs_dir / "index.json").exists():
        build_tiny_world(root)
    cache = root / "cache"
    settings = {
        # The interpreter that runs this script: the project's virtual environment.
        "mole.pythonPath": sys.executable,
        "mole.baseModel": str(base_dir),
        "mole.packRepo": str(packs_dir),
        "mole.cacheDir": str(cache),
        "mole.offline": True,
        "mole.device": "cpu",
        "mole.debounceMs": 0,
        "mole.maxNewTokens": 8,
        "mole.explainMaxNewTokens": 16,
        "mole.serverArgs": ["--threads", "1"],
    }
    env = {
        "MOLE_BASE_MODEL": str(base_dir),
        "MOLE_CACHE_DIR": str(cache),
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(root / "hf-home"),
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    return {"settings": settings, "env": env}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(argv[1]).resolve()
    root.mkdir(parents=True, exist_ok=True)
    print(json.dumps(build(root), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
