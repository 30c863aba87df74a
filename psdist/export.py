"""Weights out of psdist: a plain ``state_dict`` and a safetensors file that loads without psdist.

``trainer.state_dict()`` is what ``model.state_dict()`` of the trained model gives (parameters
and buffers, their own dtypes, BatchNorm's ``num_batches_tracked`` an integer again);
``trainer.export("model.safetensors")`` writes it with ``safetensors``, so
``model.load_state_dict(safetensors.torch.load_file(path))`` works in any PyTorch program.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from psdist.errors import ConfigError, ModelError

__all__ = ["export_safetensors", "plain_state_dict"]


def plain_state_dict(models: dict[str, torch.nn.Module], model: str | None) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of ``model`` (or of the only model), every tensor its own copy."""
    if model is None:
        if len(models) != 1:
            raise ModelError(f"this training has several models {list(models)}; name one, e.g. "
                             f"trainer.state_dict({next(iter(models))!r})")
        model = next(iter(models))
    if model not in models:
        raise ModelError(f"no model {model!r}; the models are {list(models)}")
    # own, contiguous storage per tensor: safetensors refuses shared memory (tied weights)
    return {k: v.detach().clone().contiguous() for k, v in models[model].state_dict().items()}


def export_safetensors(state: dict[str, torch.Tensor], path: str | os.PathLike[str],
                       metadata: dict[str, Any]) -> str:
    """Write ``state`` to ``path`` (``.safetensors``) with string ``metadata``; returns the path."""
    from safetensors.torch import save_file

    path = os.fspath(path)
    if not path.endswith(".safetensors"):
        raise ConfigError(f"export path {path!r} should end in .safetensors, e.g. trainer.export('model.safetensors')")
    save_file(state, path, metadata={str(k): str(v) for k, v in metadata.items()})
    return path
