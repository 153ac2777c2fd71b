"""The benchmark harness on fake timers: round order, warm-up, budget, medians, ratios, regions."""

import pytest

from scripts.bench.harness import (
    Row,
    Section,
    interleaved,
    ratios,
    targets_table,
    update_document,
)


class FakeMachine:
    """A clock that only moves when a fake benchmark runs; records every call."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls: list[str] = []

    def clock(self) -> float:
        return self.now

    def job(self, name: str, seconds: float):
        def run() -> None:
            self.calls.append(name)
            self.now += seconds

        return run


def test_rounds_alternate_after_an_untimed_warmup():
    m = FakeMachine()
    warm = {"a": m.job("warm-a", 100.0), "b": m.job("warm-b", 100.0)}
    t = interleaved(
        {"a": m.job("a", 1.0), "b": m.job("b", 3.0)}, repeats=4, warmup=warm, clock=m.clock
    )
    assert m.calls == ["warm-a", "warm-b", "a", "b", "b", "a", "a", "b", "b", "a"]
    assert t == {"a": [1.0] * 4, "b": [3.0] * 4}  # the warm-up's 100 s are not counted
    assert ratios(t["b"], t["a"]) == [3.0] * 4


def test_warmup_defaults_to_the_functions_themselves():
    m = FakeMachine()
    interleaved({"a": m.job("a", 1.0)}, repeats=2, clock=m.clock)
    assert m.calls == ["a", "a", "a"]


def test_budget_adds_rounds_up_to_max_repeats():
    m = FakeMachine()
    fns = {"a": m.job("a", 1.0), "b": m.job("b", 1.0)}
    # 2 s per round: a 5 s budget needs 3 rounds; max_repeats caps a larger one.
    assert len(interleaved(fns, repeats=1, budget=5.0, clock=m.clock)["a"]) == 3
    assert len(interleaved(fns, repeats=1, budget=1e9, max_repeats=6, clock=m.clock)["b"]) == 6
    assert len(interleaved(fns, repeats=2, budget=0.0, clock=m.clock)["a"]) == 2


def test_sync_wraps_each_timed_call():
    m = FakeMachine()
    interleaved(
        {"a": m.job("a", 1.0)}, repeats=2, sync=lambda: m.calls.append("sync"), clock=m.clock
    )
    assert m.calls == ["a", "sync", "a", "sync", "sync", "a", "sync"]


def test_bad_repeats_is_refused():
    with pytest.raises(ValueError, match="repeats"):
        interleaved({"a": lambda: None}, repeats=0)
    with pytest.raises(ValueError, match="repeats"):
        interleaved({"a": lambda: None}, repeats=5, max_repeats=3)


def test_row_takes_the_median_of_same_round_ratios():
    # Round ratios 0.5, 2.0, 0.9: the median (0.9) meets <= 1.1, the ratio of medians would not.
    row = Row("pgd", [0.5, 4.0, 0.9], ratios=ratios([0.5, 4.0, 0.9], [1.0, 2.0, 1.0]))
    row.target = ("<=", 1.1)
    assert row.ratio == pytest.approx(0.9) and row.met is True
    what, median, ratio, target, met, spread = row.cells()
    assert (what, median, ratio, target, met) == ("pgd", "900 ms", "0.900", "<= 1.1", "yes")
    assert spread == "0.500 - 2.00 (n=3)"


def test_row_without_ratio_compares_and_spreads_its_values():
    row = Row("rate", [900.0, 1100.0, 1000.0], unit="samples/s", target=(">=", 1050.0))
    assert row.ratio is None and row.met is False
    cells = row.cells()
    assert cells[2] == "—" and cells[4] == "**no**"
    assert cells[5] == "900 samples/s - 1,100 samples/s (n=3)"
    assert Row("info", [1.0]).met is None


def test_targets_table_lists_only_rows_with_targets():
    section = Section(
        "t", [Row("kept", [1.0], ratios=[1.0], target=("<=", 2.0)), Row("dropped", [1.0])]
    )
    table = targets_table([section])
    assert "kept" in table and "dropped" not in table and table.count("\n") == 2
    # A row without ratios shows its value (an accuracy), one with ratios its ratio.
    accuracy = Row("acc", [0.75, 0.85, 0.8], "", target=(">=", 0.7))
    timed = Row("time", [2.0, 2.0], ratios=[1.5, 1.7], target=("<=", 2.0))
    lines = targets_table([Section("t", [accuracy, timed])]).splitlines()
    assert lines[0] == "| what | value | target | met? |"
    assert lines[2] == "| acc | 0.800 | >= 0.7 | yes |" and lines[3].startswith("| time | 1.60 |")
    assert section.markdown().startswith("### t\n\n| what | median |")


def test_update_document_replaces_regions_and_keeps_the_prose():
    doc = (
        "# title\n\nprose A\n\n<!-- bench:train:start -->\nold\n<!-- bench:train:end -->\n\n"
        "prose B\n"
    )
    new = update_document(doc, {"train": "new table", "scale": "scale table"})
    assert "old" not in new and "prose A" in new and "prose B" in new
    assert "<!-- bench:train:start -->\nnew table\n<!-- bench:train:end -->\n\nprose B" in new
    assert new.rstrip().endswith("scale table\n<!-- bench:scale:end -->")
    assert update_document(new, {"train": "new table"}) == new
