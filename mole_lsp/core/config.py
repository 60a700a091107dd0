"""Configuration of the Mix-of-Language-Experts adapters (one dataclass, one help line per field)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from mole_lsp.lang.registry import PAPER_LANGUAGES

InitMethod = Literal["pissa", "pissa-shared-last", "lora"]
Scaling = Literal["rslora", "lora"]
NlMode = Literal["adapter", "expert"]


@dataclass
class MoleConfig:
    """Ranks, scales, targets and init of the adapters; packs record it (``to_dict``) and restore it."""

    r_shared: int = field(default=48, metadata={"help": "Rank of the shared adapter every code token uses."})
    r_expert: int = field(default=16, metadata={"help": "Rank of each language expert (0 = shared only)."})
    r_nl: int | None = field(
        default=None, metadata={"help": "Rank of the natural-language adapter; None = r_shared + r_expert."}
    )
    alpha_shared: float = field(default=32.0, metadata={"help": "LoRA alpha of the shared adapter."})
    alpha_expert: float = field(default=16.0, metadata={"help": "LoRA alpha of every expert."})
    alpha_nl: float = field(default=32.0, metadata={"help": "LoRA alpha of the NL adapter."})
    scaling: Scaling = field(
        default="rslora", metadata={"help": "rslora: alpha/sqrt(r) (the authors' choice); lora: alpha/r."}
    )
    dropout: float = field(default=0.0, metadata={"help": "Dropout on adapter inputs (training only)."})
    init: InitMethod = field(
        default="pissa",
        metadata={
            "help": "pissa: shared takes the top singular components, experts the next ones; "
            "pissa-shared-last: experts take the top ones; lora: random A, zero B."
        },
    )
    nl_mode: NlMode = field(
        default="adapter",
        metadata={"help": "adapter: NL tokens use their own adapter; expert: NL is one more expert (ablation)."},
    )
    languages: tuple[str, ...] = field(
        default=PAPER_LANGUAGES, metadata={"help": "Registry ids that get an expert at attach time."}
    )
    target_modules: tuple[str, ...] = field(
        default=("gate_proj", "up_proj", "down_proj"),
        metadata={"help": "Names of the linear layers that get adapters (the FFN of Llama-family models)."},
    )
    adapter_dtype: str = field(default="float32", metadata={"help": "dtype of adapter weights (float32, bfloat16)."})
    svd: Literal["exact", "randomized"] = field(
        default="exact", metadata={"help": "exact: torch.linalg.svd in fp32; randomized: torch.svd_lowrank."}
    )
    svd_oversample: int = field(default=16, metadata={"help": "Extra columns for the randomized SVD."})
    svd_niter: int = field(default=4, metadata={"help": "Power iterations of the randomized SVD."})

    def __post_init__(self) -> None:
        self.languages = tuple(self.languages)
        self.target_modules = tuple(self.target_modules)
        if self.r_nl is None:
            self.r_nl = self.r_shared + self.r_expert
        for name in ("r_shared", "r_expert", "r_nl"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.init != "lora" and self.nl_mode == "adapter" and self.r_nl != self.r_shared + self.r_expert:
            # The residual removes the union of components once; NL must add back exactly that union.
            raise ValueError(
                f"PiSSA init needs r_nl == r_shared + r_expert ({self.r_shared + self.r_expert}), got {self.r_nl}"
            )
        if self.scaling not in ("rslora", "lora"):
            raise ValueError(f"scaling must be 'rslora' or 'lora', got {self.scaling!r}")
        if self.init not in ("pissa", "pissa-shared-last", "lora"):
            raise ValueError(f"init must be pissa, pissa-shared-last or lora, got {self.init!r}")
        if self.nl_mode not in ("adapter", "expert"):
            raise ValueError(f"nl_mode must be 'adapter' or 'expert', got {self.nl_mode!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def r_code(self) -> int:
        """Rank a code token sees: shared + its expert (also the number of SVD components removed)."""
        return self.r_shared + self.r_expert

    def expert_components(self, res_rank: int) -> slice | None:
        """Which rows of the residual factors (``res_A``, ``res_B``) hold the components every expert starts
        from: [r_shared, r_code) (pissa) or [0, r_expert) (pissa-shared-last); None when the residual is
        not a PiSSA split of this layout (plain LoRA: rank 0) or experts have rank 0."""
        if not self.r_expert or self.init == "lora" or res_rank != self.r_code:
            return None
        return slice(0, self.r_expert) if self.init == "pissa-shared-last" else slice(self.r_shared, self.r_code)

    def scale(self, alpha: float, r: int) -> float:
        if r == 0:
            return 0.0
        return alpha / math.sqrt(r) if self.scaling == "rslora" else alpha / r

    @property
    def scale_shared(self) -> float:
        return self.scale(self.alpha_shared, self.r_shared)

    @property
    def scale_expert(self) -> float:
        return self.scale(self.alpha_expert, self.r_expert)

    @property
    def scale_nl(self) -> float:
        return self.scale(self.alpha_nl, self.r_nl or 0)

    def layout(self) -> dict[str, Any]:
        """The fields two packs must share to be combined (what 'another rank layout' means)."""
        return {
            "r_shared": self.r_shared,
            "r_expert": self.r_expert,
            "r_nl": self.r_nl,
            "scale_shared": self.scale_shared,
            "scale_expert": self.scale_expert,
            "scale_nl": self.scale_nl,
            "nl_mode": self.nl_mode,
            "target_modules": list(self.target_modules),
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["languages"] = list(self.languages)
        d["target_modules"] = list(self.target_modules)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MoleConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown MoleConfig fields: {sorted(unknown)}")
        return cls(**d)
