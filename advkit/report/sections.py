"""The page's tables and prose for adversarial training, defenses and transfer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .defense import defense_pairs, defense_rows, warning_sentences
from .groups import Group
from .numbers import EpsChoice
from .results import Cell, Head, Table
from .style import eps_text, fmt
from .trained import has_adversarial, overfitting_notes
from .transfers import dataset_transfers, transfer_sentences, transfer_table


def defense_table(rows: Sequence[Sequence[str]]) -> Table:
    head = [Head("run"), Head("defense"), Head("attack"), Head("ε*"),
            Head("naive", "accuracy; 95% interval"), Head("adaptive", "accuracy; 95% interval"),
            Head("undefended model", "same attack; 95% interval")]  # fmt: skip
    return Table(head, [[Cell(c, "num" if i >= 3 else "") for i, c in enumerate(r)] for r in rows])


def _transfer_cell(value: Any) -> Cell:
    if value is None:
        return Cell("—", "num")
    v, (lo, hi) = value
    return Cell(fmt(v, 3), "num", sub=f"[{fmt(lo, 3)}, {fmt(hi, 3)}]")


def transfer_html(records: Sequence[Any]) -> Table:
    head, rows = transfer_table(records)
    eps = [eps_text(r.settings.epsilons[-1]) for r in records]
    heads = [Head(h) for h in head[:3]]
    heads += [Head(h, f"victim accuracy at ε = {e}") for h, e in zip(head[3:], eps, strict=True)]
    return Table(heads, [[Cell(r[0]), Cell(r[1]), Cell(r[2])] + [_transfer_cell(v) for v in r[3:]]
                         for r in rows])  # fmt: skip


def extra_sections(groups: Sequence[Group], chosen: dict[str, EpsChoice]) -> dict[str, Any]:
    """``adversarial``, ``overfitting``, ``defense_table``, ``defense_words``,
    ``transfer_table``, ``transfer_words`` of one dataset."""
    runs = [r for g in groups for r in g.runs]
    eps = {norm: c.eps for norm, c in chosen.items()}
    pairs = defense_pairs(runs)
    records = dataset_transfers(runs)
    return {
        "adversarial": has_adversarial(groups),
        "overfitting": overfitting_notes(groups),
        "defense_table": defense_table(defense_rows(pairs, eps)) if pairs else None,
        "defense_words": warning_sentences(pairs, eps),
        "transfer_table": transfer_html(records) if records else None,
        "transfer_words": transfer_sentences(records),
    }
