"""`ewc: {data, lambda, samples}` — elastic weight consolidation: a penalty that holds the
parameters the old data depends on near their starting values.

Fisher diagonal F = mean over `samples` old examples of (∂loss/∂θ)² for every trainable θ,
computed once at the start; penalty = λ/2 · Σ F·(θ − θ₀)². With LoRA the trainable θ are the
adapter matrices, so the penalty acts on them. `loss_terms.EwcTerm` adds it to the loss.
"""

from __future__ import annotations

from typing import Any


def fisher_diagonal(model: Any, batches: list[dict[str, Any]]) -> dict[str, Any]:
    """{name: F} for every trainable parameter, one example per batch (per-example gradients)."""
    import torch

    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    was_training = model.training
    model.eval()
    for batch in batches:
        model.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        for n, p in params.items():
            if p.grad is not None:
                fisher[n] += p.grad.detach() ** 2
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {n: f / max(len(batches), 1) for n, f in fisher.items()}


def ewc_penalty(model: Any, fisher: dict[str, Any], anchor: dict[str, Any], lam: float) -> Any:
    """λ/2 · Σ F·(θ − θ₀)²; zero while θ = θ₀."""
    total = None
    for n, p in model.named_parameters():
        if n in fisher:
            term = (fisher[n] * (p - anchor[n]) ** 2).sum()
            total = term if total is None else total + term
    return 0.0 if total is None else lam / 2 * total
