"""The soak's verdict: it fails when either memory figure passes 1.5x, not only the whole server's.

The soak on d9d26d1 grew the serving process 1.615x and still printed passed, because only the sum with the
validation worker was judged; that was a bug.
"""

from __future__ import annotations

from bench.soak import passed


def test_a_run_within_every_limit_passes() -> None:
    assert passed(0, 0, [100.0, 120.0, 149.0], [200.0, 250.0, 299.0])


def test_the_serving_process_alone_past_the_limit_fails_even_when_the_whole_server_is_within_it() -> None:
    # the figures of the d9d26d1 soak: serving process 100.5 -> 162.4 MiB, whole server 1.272x
    assert not passed(0, 0, [100.5, 162.4], [226.0, 287.5])


def test_the_whole_server_past_the_limit_fails() -> None:
    assert not passed(0, 0, [100.0, 110.0], [200.0, 301.0])


def test_an_error_answer_or_a_lost_write_fails() -> None:
    assert not passed(1, 0, [100.0], [200.0])
    assert not passed(0, 1, [100.0], [200.0])
