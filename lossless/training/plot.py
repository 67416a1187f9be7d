"""loss.png: the training loss per logged step (matplotlib imported only here, optional)."""

from __future__ import annotations

from pathlib import Path


def write_loss_plot(losses: list[float], path: Path, title: str) -> str | None:
    """Write the curve; returns a note instead when matplotlib is missing or there is no loss."""
    if not losses:
        return "no loss was logged; loss.png not written"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed; loss.png not written"
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(losses) + 1), losses)
    ax.set_xlabel("logged step")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None
