"""From artifacts to modules and back: the one place that knows how a model is stored.

Below both training (``train/``) and planning (``planner.py``, ``evaluate.py``, ``bench.py``), so
neither imports the other: rebuilding a network from its artifact, the normalisers' tensor form in
an artifact, the ``prefix.`` naming of a state dict inside an artifact, and the choice of device.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

from .artifacts import Artifact
from .data.windows import Normalizer
from .diffusion import CTMPrecond, EDMPrecond
from .errors import UsageError
from .nets import build_net
from .proposer import build_proposer


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but CUDA is not available; use --device cpu or auto")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise UsageError(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)


def prefixed(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A state dict's tensors under ``prefix.`` in an artifact (read back with ``Artifact.group``)."""
    return {f"{prefix}.{k}": v for k, v in state.items()}


def normalizer_tensors(normalizers: Mapping[str, Normalizer]) -> dict[str, torch.Tensor]:
    """Flatten normalisers into artifact tensors ``norm.<name>.<field>``."""
    out = {}
    for name, n in normalizers.items():
        for k, v in n.state_dict().items():
            out[f"norm.{name}.{k}"] = torch.as_tensor(np.asarray(v), dtype=torch.float32)
    return out


def normalizers_from(tensors: Mapping[str, torch.Tensor]) -> dict[str, Normalizer]:
    """Inverse of :func:`normalizer_tensors`."""
    groups: dict[str, dict[str, np.ndarray]] = {}
    for k, v in tensors.items():
        if k.startswith("norm."):
            _, name, fld = k.split(".", 2)
            groups.setdefault(name, {})[fld] = v.numpy()
    return {name: Normalizer.from_state_dict(d) for name, d in groups.items()}


def load_net(art: Artifact, prefix: str = "net") -> nn.Module:
    """Rebuild the network stored in an artifact (config ``<prefix>_kind``/``<prefix>``) with its weights."""
    cfg = art.config
    net = build_net(cfg[f"{prefix}_kind"], cfg[prefix])
    net.load_state_dict(art.group(prefix))
    return net.eval()


def denoiser_from(art: Artifact) -> EDMPrecond:
    """The teacher D(x; sigma) of a ``teacher`` artifact."""
    return EDMPrecond(load_net(art), sigma_data=art.config["sigma_data"]).eval()


def student_from(art: Artifact) -> CTMPrecond:
    """The student G(x_t, t, s) of a ``student`` artifact."""
    return CTMPrecond(load_net(art), sigma_data=art.config["sigma_data"]).eval()


def proposer_from(art: Artifact) -> nn.Module:
    """Rebuild the Trajectory Diffuser proposer stored in a ``proposer`` artifact."""
    net = build_proposer(art.config["net"], art.config["net_kind"])
    net.load_state_dict(art.group("net"))
    return net.eval()
