"""The report writer: a run rewrites the blocks it measured and keeps the others (the 1M tier runs by hand).

docs/performance.md is the record of every figure; losing the 100k and 1M rows on each `make bench` was a bug.
"""

from __future__ import annotations

from bench.run import TIERS_HEADING, _firsts, _processes, _tenths, _with_rounds, replace_block

REPORT = f"""# Performance

## Figures

<!-- figures:core:begin -->
old core
<!-- figures:core:end -->

{TIERS_HEADING}

<!-- figures:tier-1000000:begin -->
the 1M rows, measured by hand
<!-- figures:tier-1000000:end -->

## Published figures of other servers
"""


def test_a_block_is_rewritten_in_place_and_the_others_are_kept() -> None:
    text = replace_block(REPORT, "core", ["new core"])
    assert "new core" in text and "old core" not in text
    assert "the 1M rows, measured by hand" in text
    assert text.index("new core") < text.index(TIERS_HEADING)


def test_new_tiers_go_in_size_order_under_the_heading() -> None:
    text = replace_block(REPORT, "tier-10000", ["ten thousand"])
    text = replace_block(text, "tier-100000", ["hundred thousand"])
    order = [text.index(s) for s in (TIERS_HEADING, "ten thousand", "hundred thousand", "the 1M rows")]
    assert order == sorted(order)
    assert text.index("the 1M rows") < text.index("## Published figures")
    again = replace_block(text, "tier-10000", ["ten thousand, again"])
    assert again.count("ten thousand") == 1 and "ten thousand, again" in again
    assert again.count("<!-- figures:tier-10000:begin -->") == 1


def test_the_load_by_tenths_shows_its_slowest_fastest_and_last_tenth() -> None:
    assert _tenths({"ingest_tenths_resources_per_s": [1400, 1210, 1650, 1330]}) == "1210 / 1650 / 1330 res/s"
    assert _tenths({}) == "not recorded"  # results recorded before the tenths were kept


def test_a3_names_each_first_ten_thousand_it_took_the_median_of() -> None:
    alone = {"ingest_first_resources_per_s": 2900}
    assert _firsts(alone) == "2900"
    bracketed = {"ingest_first_resources_per_s": 3164, "ingest_first_fresh_resources_per_s": [2410, 2380],
                 "ingest_first_median_resources_per_s": 2410}
    assert _firsts(bracketed) == ("2410 (median of 3164 in the tier, 2410 and 2380 into fresh files before and "
                                  "after)")


def test_a_ratio_shows_each_rounds_value_beside_its_median() -> None:
    found = {"include_overhead": 1.152, "include_overhead_rounds": [1.1, 1.152, 1.31]}
    assert _with_rounds(found, "include_overhead") == "1.152 (rounds: 1.1, 1.152, 1.31)"
    assert _with_rounds({"include_overhead": 1.2}, "include_overhead") == "1.2"  # results recorded before rounds were


def test_the_tier_says_its_rounds_ran_on_processes_of_their_own() -> None:
    assert "3 rounds, each on a server process" in _processes({"measuring_processes": 3})
    assert _processes({"measuring_processes": 1}) == "" and _processes({}) == ""
    assert "5 rounds, taken in turn on 3 server processes" in _processes({"measuring_processes": 3, "rounds": 5})
