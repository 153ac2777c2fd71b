"""Transfer matrices in the report: adversarial images crafted on a source (one
run or an ensemble) and judged by victims, one matrix per attack.

The records are `advkit.transfer.TransferRecord` files in the runs'
``transfers/``; attacks are named from their settings (``mifgsm`` with decay 0 is
I-FGSM, input diversity adds ``DIM-``). Sentences call a difference a finding only
when the 95% intervals of the pooled counts do not overlap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..transfer import TransferRecord
from ..trust import wilson
from .canvas import new_figure
from .figures import heatmap
from .load import ReportRun
from .style import FIG_WIDTH, eps_text, fmt

ATTACK_ORDER = ("FGSM", "I-FGSM", "MI-FGSM", "DIM-I-FGSM", "DIM-MI-FGSM")


def attack_label(record: TransferRecord) -> str:
    """``FGSM``, ``I-FGSM`` (mifgsm, decay 0), ``MI-FGSM``, ``DIM-MI-FGSM`` (diversity > 0)."""
    s = record.settings
    if s.attack is None:
        return "images from files"
    name = s.attack.upper()
    if s.attack == "mifgsm":
        name = "I-FGSM" if float(s.options.get("decay") or 0.0) == 0.0 else "MI-FGSM"
    if float(s.options.get("diversity") or 0.0) > 0:
        name = f"DIM-{name}"
    return name


def _order(label: str) -> tuple[int, str]:
    return (ATTACK_ORDER.index(label) if label in ATTACK_ORDER else len(ATTACK_ORDER), label)


def dataset_transfers(report_runs: Sequence[ReportRun]) -> list[TransferRecord]:
    """The runs' transfer records, each once, in attack order (FGSM first)."""
    found: dict[str, TransferRecord] = {}
    for run in report_runs:
        for rec in run.transfers:
            found.setdefault(rec.name, rec)
    return sorted(found.values(), key=lambda r: (_order(attack_label(r)), r.name))


def members(source: str) -> list[str]:
    """The runs of a source label (``a + b`` is an ensemble of a and b)."""
    return [s.strip() for s in source.split(" + ")]


def white_box(source: str, victim: str) -> bool:
    """Whether the victim is (part of) the source: not a transfer."""
    return victim in members(source)


def _eps_index(record: TransferRecord) -> int:
    """The matrix shown: the largest budget of the record."""
    return len(record.settings.epsilons) - 1


def transfer_figure(dataset: str, records: Sequence[TransferRecord]) -> Figure | None:
    """One panel per attack: victim accuracy (rows = source, columns = victim) on the
    8-bit images at the record's largest budget; white-box cells framed in red."""
    if not records:
        return None
    n = len(records)
    cols = min(2, n)
    rows = (n + cols - 1) // cols
    sizes = max(len(r.sources) for r in records)
    fig = new_figure(FIG_WIDTH, (1.2 + 0.42 * sizes) * rows + 1.0)
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    image = None
    for ax, rec in zip(axes, records, strict=False):
        k = _eps_index(rec)
        values = np.array(rec.accuracy[k], dtype=float)
        texts = {(i, j): fmt(values[i, j], 2) for i in range(len(rec.sources))
                 for j in range(len(rec.victims))}  # fmt: skip
        image = heatmap(ax, values, rec.sources, rec.victims, texts)
        for i, source in enumerate(rec.sources):
            for j, victim in enumerate(rec.victims):
                if white_box(source, victim):
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False,
                                           edgecolor="#c00000", linewidth=2.2))  # fmt: skip
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.set_title(f"{attack_label(rec)}, ε = {eps_text(rec.settings.epsilons[k])}")
    for ax in axes[n:]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=axes[:n].tolist(), label="victim accuracy", shrink=0.85)
    fig.supxlabel("victim", fontsize=10)
    fig.supylabel("source (crafted on)", fontsize=10)
    fig.suptitle(f"{dataset}: transfer, {records[0].n_samples} samples per cell (8-bit images)\n"
                 "red frame: white-box (the victim is, or is part of, the source)")  # fmt: skip
    return fig


def transfer_table(records: Sequence[TransferRecord]) -> tuple[list[str], list[list[Any]]]:
    """Columns ``source, victim, kind, <attack>...``; each attack cell is
    ``(accuracy, (lo, hi))`` at the record's largest budget, or None."""
    labels = [attack_label(r) for r in records]
    pairs: list[tuple[str, str]] = []
    for rec in records:
        pairs += [(s, v) for s in rec.sources for v in rec.victims if (s, v) not in pairs]
    rows = []
    for s, v in pairs:
        row: list[Any] = [s, v, "white-box" if white_box(s, v) else "transfer"]
        for rec in records:
            if s in rec.sources and v in rec.victims:
                i, j, k = rec.sources.index(s), rec.victims.index(v), _eps_index(rec)
                row.append((rec.accuracy[k][i][j], tuple(rec.intervals[k][i][j])))
            else:
                row.append(None)
        rows.append(row)
    return ["source", "victim", "kind", *labels], rows


def _pooled(rec: TransferRecord, cells: Sequence[tuple[int, int]]) -> tuple[float, tuple]:
    k = _eps_index(rec)
    correct = sum(rec.correct[k][i][j] for i, j in cells)
    total = rec.n_samples * len(cells)
    return correct / max(total, 1), wilson(correct, total)


def _held_out(rec: TransferRecord, source: str | None = None) -> list[tuple[int, int]]:
    return [(i, j) for i, s in enumerate(rec.sources) for j, v in enumerate(rec.victims)
            if not white_box(s, v) and (source is None or s == source)]  # fmt: skip


def _compare(a: tuple[float, tuple], b: tuple[float, tuple]) -> str:
    """``lower``/``higher`` when the intervals are apart, else ``same``."""
    if a[1][1] < b[1][0]:
        return "lower"
    if a[1][0] > b[1][1]:
        return "higher"
    return "same"


def _best_source(rec: TransferRecord) -> str | None:
    scores = {s: _pooled(rec, _held_out(rec, s)) for s in rec.sources if _held_out(rec, s)}
    if len(scores) < 2:
        return None
    ranked = sorted(scores, key=lambda s: scores[s][0])
    best, second = ranked[0], ranked[1]
    b, c = scores[best], scores[second]
    head = (f"With {attack_label(rec)}, the best source is {best}: held-out victims keep "
            f"{fmt(b[0], 3)} [{fmt(b[1][0], 3)}, {fmt(b[1][1], 3)}] (pooled over victims)")  # fmt: skip
    if _compare(b, c) == "lower":
        return head + f", clearly below the next, {second} ({fmt(c[0], 3)})."
    return head + f"; {second} ({fmt(c[0], 3)}) is within the intervals, so not a finding."


def _step(records: dict[str, TransferRecord], old: str, new: str, what: str) -> str | None:
    a, b = records.get(old), records.get(new)
    if a is None or b is None or a.sources != b.sources or a.victims != b.victims:
        return None
    pa, pb = _pooled(a, _held_out(a)), _pooled(b, _held_out(b))
    verdict = _compare(pb, pa)
    words = {"lower": f"{what} helps here", "higher": f"{what} hurts here",
             "same": f"{what} makes no difference beyond the intervals here"}  # fmt: skip
    return (f"{new} against {old}: held-out victim accuracy {fmt(pb[0], 3)} vs {fmt(pa[0], 3)}"
            f" (pooled, 95% intervals [{fmt(pb[1][0], 3)}, {fmt(pb[1][1], 3)}] and "
            f"[{fmt(pa[1][0], 3)}, {fmt(pa[1][1], 3)}]): {words[verdict]}.")  # fmt: skip


def transfer_sentences(records: Sequence[TransferRecord]) -> list[str]:
    """What transfers: the best source per attack, and whether iterating, momentum
    and input diversity lower the held-out victims' accuracy beyond the intervals."""
    out = [s for s in map(_best_source, records) if s]
    by_label = {attack_label(r): r for r in records}
    steps = [("FGSM", "I-FGSM", "iterating"), ("I-FGSM", "MI-FGSM", "momentum"),
             ("MI-FGSM", "DIM-MI-FGSM", "input diversity")]  # fmt: skip
    out += [s for s in (_step(by_label, *step) for step in steps) if s]
    return out
