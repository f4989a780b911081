"""selfsup: self-supervised pretraining and evaluation, one contract for every modality."""

__version__ = "0.1.0"

from selfsup.api import Run, audit, build_config, compare, evaluate, generate, load_encoder, pretrain  # noqa: E402

__all__ = ["Run", "audit", "build_config", "compare", "evaluate", "generate", "load_encoder", "pretrain", "__version__"]
