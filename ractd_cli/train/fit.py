"""One way to turn any model kind into an artifact: ``fit(method, cfg, opts)``.

A :class:`Method` is what differs between the kinds a trainer makes (teacher, student, reward model,
inverse dynamics, the Trajectory Diffuser's refiner and proposer): the network being optimised, its
batches, its loss, the tensors and config its artifact holds, and what it adds once trained.
:func:`fit` is everything else, written once: the training loop (:func:`train_method`, over
:func:`~ractd_cli.train.loop.train`), scoring unsaved artifacts online (``--eval-every``), keeping
the best-scoring weights (``--keep best``) and saving the artifact. A network that is one part of
another artifact (the Trajectory Diffuser's three) goes through :func:`train_method` alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..artifacts import Artifact, save_artifact
from .common import BestWeights, TrainOptions, check_keep
from .data import Source
from .loop import TrainConfig, TrainResult, saved, train

Tensors = dict[str, torch.Tensor]


class Method:
    """One model kind's training, as :func:`fit` needs it. Subclasses set the attributes in their
    ``__init__`` and override :meth:`loss`, :meth:`config` and :meth:`tensors`.

    - ``kind``: the artifact kind (``ractd_cli.artifacts.KINDS``); ``task``, ``dataset``: whose;
    - ``model``: the module the loop optimises; ``source``: its batches; ``fingerprint``: the data's;
    - ``parents``: the artifacts it was made from; ``meta``: more header fields (outside ``config``);
    - ``run_extra``: what else identifies the run, for ``--resume``;
    - ``named``: whether the user's ``--name`` names this artifact (not a by-product such as the
      teacher's inverse dynamics);
    - ``run_name``: the progress bar's and checkpoint's label (default ``<kind>-<task>``).
    """

    kind: str
    task: str
    dataset: str | None
    model: nn.Module
    source: Source
    fingerprint: str | None = None
    parents: list[str] = []
    meta: dict[str, Any] = {}
    run_extra: dict[str, Any] = {}
    named: bool = True
    run_name: str | None = None

    def loss(self, model: nn.Module, ema: nn.Module, batch: Mapping[str, torch.Tensor], gen: torch.Generator) -> dict[str, torch.Tensor]:
        """``{"loss": scalar, other scalars...}`` of one batch (the loop's ``LossFn``)."""
        raise NotImplementedError

    def config(self, **more: Any) -> dict[str, Any]:
        """The artifact's ``config``, with ``more`` (what training added: curves, selection) merged in."""
        raise NotImplementedError

    def tensors(self, model: nn.Module, ema: nn.Module) -> Tensors:
        """The tensors the artifact holds, from the loop's model and its EMA."""
        raise NotImplementedError

    evaluate: Callable[[nn.Module, nn.Module], dict] | None = None
    """``evaluate(model, ema)``: its own measurement during training (e.g. the reward model's
    held-out fit), where it has one."""

    def finish(self, res: TrainResult) -> tuple[dict[str, Any], dict[str, float]]:
        """After the last step: (more ``config``, more ``losses``) for the artifact."""
        return {}, {}


def train_method(method: Method, cfg: TrainConfig, opts: TrainOptions, *, evaluate: Callable[[nn.Module, nn.Module], dict] | None = None,
                 eval_every: int = 0, run_extra: Mapping[str, Any] | None = None) -> TrainResult:
    """``method``'s network through the one training loop with ``cfg`` (``--resume`` and progress
    from ``opts``), nothing saved: the loop's result. ``run_extra`` joins ``method.run_extra`` in
    identifying the run."""
    return train(
        method.model, method.loss, method.source, cfg,
        name=method.run_name or f"{method.kind}-{method.task}",
        run_extra={**method.run_extra, **(run_extra or {})},
        resume=opts.resume, show_progress=opts.show_progress,
        evaluate=evaluate, eval_every=eval_every if evaluate is not None else 0, fingerprint=method.fingerprint,
    )


def fit(
    method: Method,
    cfg: TrainConfig,
    opts: TrainOptions,
    *,
    evaluator: Callable[[Artifact], dict] | None = None,
    eval_every: int = 0,
    eval_label: dict | None = None,
    keep: str = "last",
) -> Artifact:
    """Train ``method`` with ``cfg`` and save its artifact.

    ``evaluator(artifact)`` (every ``eval_every`` steps and at the end) scores an unsaved artifact of
    the current weights (those ``method.tensors`` would save); its results become the artifact's
    ``eval_curve``, with ``eval_label`` (e.g. the episode count) recorded beside it and joining the
    run's identity. Without an evaluator, the method's own ``Method.evaluate`` (if any) runs every
    ``eval_every`` steps instead. Training is the same with or without evaluation. ``keep="best"``
    saves the weights of the best-scoring evaluation instead of the last
    (:class:`~ractd_cli.train.common.BestWeights`), recorded as the artifact's ``selection``;
    ``keep="both"`` saves the last weights first, then the best-scoring ones, whose ``selection``
    names the first (``last_weights``; :func:`with_last_weights` gives the pair). Returns the artifact
    of the weights ``keep`` chose (``both``: the selected one).
    """
    check_keep(keep, eval_every if evaluator is not None else 0)
    best = BestWeights() if keep in ("best", "both") else None
    eval_cfg = {"every": eval_every, **(eval_label or {})} if evaluator is not None and eval_every else None

    def score(model: nn.Module, ema: nn.Module) -> dict:
        tensors = method.tensors(model, ema)
        meta = {"id": "unsaved", "kind": method.kind, "task": method.task, "dataset": method.dataset,
                "parents": list(method.parents), "config": method.config(), **method.meta}
        result = evaluator(Artifact(path=Path(), meta=meta, tensors=tensors))
        if best is not None:
            best.offer(result, tensors)
        return result

    evaluate = score if eval_cfg else (method.evaluate if eval_every else None)
    res = train_method(method, cfg, opts, evaluate=evaluate, eval_every=eval_every, run_extra={"eval": eval_cfg} if eval_cfg else None)
    more, losses = method.finish(res)
    if eval_cfg:
        more.update(eval=eval_cfg, eval_curve=res.curve)

    def save(tensors: Tensors, **config: Any) -> Artifact:
        return save_artifact(
            tensors,
            kind=method.kind,
            task=method.task,
            dataset=method.dataset,
            parents=list(method.parents),
            config=method.config(**more, **config),
            losses={**res.losses, **losses},
            loss_curve=res.loss_curve,
            speed=res.speed,
            runs=[res.run],
            data_fingerprint=method.fingerprint,
            **method.meta,
            **(opts.named() if method.named else {}),
        )

    tensors = method.tensors(res.model, res.ema)
    if best is None:
        return saved(save(tensors), res)
    last = save(tensors) if keep == "both" else None
    tensors, selection = best.choose(res.curve, res.resumed_from)
    return saved(save(tensors, selection={**selection, **({"last_weights": last.id} if last else {})}), res)


def with_last_weights(art: Artifact) -> list[Artifact]:
    """``[art]``, or ``[its last-weights twin, art]`` for the selected artifact of a ``--keep both`` run."""
    from ..artifacts import load_artifact

    twin = (art.config.get("selection") or {}).get("last_weights")
    return [art] if twin is None else [load_artifact(twin, kind=art.kind, task=art.task, directory=art.path.parent), art]
