"""Base models from a Hugging Face Hub repo (``owner/name[@revision]``).

The repo is fetched with ``snapshot_download`` into the Hugging Face cache: config, tokenizer and
safetensors files only (pickled weights are never fetched). The commit sha is recorded as the revision.
Offline, only the cache is used.
"""

from __future__ import annotations

import re
from pathlib import Path

from mole_lsp.engine.folder import TOKENIZER_FILES, info_from_folder
from mole_lsp.engine.model_info import BASE_MODEL_ENV, BaseModelError, BaseModelInfo, Progress
from mole_lsp.paths import hub_endpoint

# Files fetched from a Hub repo: everything a safetensors checkpoint needs, never pickles.
HUB_PATTERNS = [
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    *TOKENIZER_FILES,
    "LICENSE*",
]


def resolve_hub(repo_id: str, revision: str | None, offline: bool, report: Progress) -> BaseModelInfo:
    """The cached snapshot of ``repo_id`` at ``revision`` (None: main), fetched first unless ``offline``."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = hub_endpoint()
    where = f"{repo_id}@{revision}" if revision else repo_id
    try:
        if offline:
            folder = snapshot_download(
                repo_id,
                revision=revision,
                allow_patterns=HUB_PATTERNS,
                endpoint=endpoint,
                local_files_only=True,
            )
        else:
            report(f"Fetching {where} from the Hub (config, tokenizer, safetensors)")
            folder = snapshot_download(
                repo_id, revision=revision, allow_patterns=HUB_PATTERNS, endpoint=endpoint
            )
    except RevisionNotFoundError as err:
        raise BaseModelError(f"{repo_id} has no revision {revision!r} on the Hub") from err
    except RepositoryNotFoundError as err:
        raise BaseModelError(
            f"No model repo {repo_id!r} on {endpoint or 'the Hub'} (or it is private/gated)"
        ) from err
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
        mode = "offline (HF_HUB_OFFLINE=1)" if offline else "unable to reach the Hub"
        raise BaseModelError(
            f"{where} is not (completely) in the Hugging Face cache and mole-lsp is {mode}. Fetch it once "
            f"online, or set {BASE_MODEL_ENV} to a local model folder."
        ) from err
    except (HfHubHTTPError, OSError) as err:
        raise BaseModelError(f"Could not fetch {where} from the Hub: {err}") from err
    path = Path(folder)
    if not any(path.glob("*.safetensors")):
        raise BaseModelError(
            f"{where} has no safetensors weights (pickled .bin checkpoints are not loaded); "
            "convert it to safetensors or pick another repo"
        )
    commit = path.name if re.fullmatch(r"[0-9a-f]{40}", path.name) else revision
    return info_from_folder(
        path, repo_id=repo_id, revision=commit, name=repo_id.split("/")[-1], source="hub"
    )
