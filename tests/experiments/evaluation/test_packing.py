"""Packing scoring requests: shared contexts once, continuations as branches, rows filled first-fit decreasing."""

import numpy as np
import pytest

from meshlm.experiments.evaluation import packing

# Two answers to one question, a third request with its own context, and a one-token answer.
PAIRS = [([1, 2, 3], [7, 8]), ([1, 2, 3], [9, 10, 11]), ([4, 5], [12]), ([1, 2, 3], [13])]


def test_requests_with_one_context_form_one_group():
    groups = packing.by_context(PAIRS, capacity=16)
    assert [(g.context, g.requests, g.length) for g in groups] == [
        ((1, 2, 3), [0, 1, 3], 3 + 1 + 2 + 0),  # every continuation but its last token
        ((4, 5), [2], 2),
    ]


def test_a_group_too_long_for_a_row_is_split_and_a_request_too_long_refused():
    groups = packing.by_context(PAIRS, capacity=5)
    assert [(g.context, g.requests, g.length) for g in groups] == [
        ((1, 2, 3), [0], 4),
        ((1, 2, 3), [1, 3], 5),
        ((4, 5), [2], 2),
    ]
    with pytest.raises(ValueError, match="request 1: 5 tokens do not fit a row of 4"):
        packing.by_context(PAIRS, capacity=4)


def test_rows_are_filled_first_fit_decreasing_within_capacity():
    groups = [packing.Group((i,), [i], n) for i, n in enumerate([5, 3, 7, 2, 4, 1])]
    rows = packing.fill_rows(groups, capacity=8)
    # 7 -> row a; 5 -> row b; 4 -> row c; 3 -> b (8); 2 -> c (6); 1 -> a (8). Fullest first, ties in order.
    assert [[g.length for g in row] for row in rows] == [[7, 1], [5, 3], [4, 2]]
    assert sorted(g.requests[0] for row in rows for g in row) == list(range(6))


def test_layout_puts_each_continuation_after_its_context_and_scores_every_token():
    rows = packing.fill_rows(packing.by_context(PAIRS, 16), 16)
    p = packing.layout(rows, PAIRS, T=12, K=8)
    np.testing.assert_array_equal(p.tokens_RT[0], [1, 2, 3, 7, 9, 10, 4, 5, 0, 0, 0, 0])
    np.testing.assert_array_equal(p.positions_RT[0], [0, 1, 2, 3, 3, 4, 0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(p.segments_RT[0], [1, 1, 1, 1, 1, 1, 2, 2, 0, 0, 0, 0])
    np.testing.assert_array_equal(p.branches_RT[0], [0, 0, 0, 1, 2, 2, 0, 0, 0, 0, 0, 0])
    # Request 0 ([7, 8]): 7 read at the context's last position (2), 8 at 7's (3); request 1 at 2, 4, 5;
    # request 3's one token at 2; request 2's at its own context's last (7).
    np.testing.assert_array_equal(p.index_RK[0], [2, 3, 2, 4, 5, 2, 7, 0])
    np.testing.assert_array_equal(p.targets_RK[0], [7, 8, 9, 10, 11, 13, 12, 0])
    np.testing.assert_array_equal(p.request_RK[0], [0, 0, 1, 1, 1, 3, 2, -1])
    assert packing.row_length(rows[0]) == 8 and packing.scored_slots(rows[0], PAIRS) == 7
