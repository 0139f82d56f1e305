"""Scoring requests packed into rows: each distinct context once, its continuations after it as branches that see
the context and themselves only (`AttentionMask.shared_prefix`), several such groups to a row.

Few-shot requests repeat their contexts (one per answer of a multiple-choice item) and pad badly (lengths vary
with K); here a context is run once however many answers it has, and rows are filled first-fit-decreasing, so
nearly every position run is a real one.
"""

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Group:
    """A context and some of the requests that continue it: what one segment of a row holds."""

    context: tuple[int, ...]
    requests: list[int]  # indices into the request list
    length: int  # tokens in the row: the context + every continuation but its last token


@dataclasses.dataclass(frozen=True)
class PackedRows:
    """[R, T] row arrays, and [R, K] scored slots: the position whose hidden state predicts each continuation
    token, that token, and the request it belongs to (-1: a padding slot)."""

    tokens_RT: np.ndarray
    positions_RT: np.ndarray
    segments_RT: np.ndarray  # 0: padding
    branches_RT: np.ndarray  # 0: a context, b > 0: the b-th continuation of its segment
    index_RK: np.ndarray
    targets_RK: np.ndarray
    request_RK: np.ndarray


def by_context(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], capacity: int) -> list[Group]:
    """Requests with the same context, in segments of at most `capacity` tokens (a context with many long
    continuations is repeated across segments). Every request alone must fit: context + continuation - 1 tokens."""
    by_context: dict[tuple[int, ...], list[int]] = {}
    for i, (ctx, _) in enumerate(pairs):
        by_context.setdefault(tuple(ctx), []).append(i)
    out = []
    for ctx, requests in by_context.items():
        taken, length = [], len(ctx)
        for i in requests:
            extra = len(pairs[i][1]) - 1
            if length + extra > capacity and taken:
                out.append(Group(ctx, taken, length))
                taken, length = [], len(ctx)
            if length + extra > capacity:
                raise ValueError(f"request {i}: {length + extra} tokens do not fit a row of {capacity}")
            taken.append(i)
            length += extra
        out.append(Group(ctx, taken, length))
    return out


def fill_rows(parts: Sequence[Group], capacity: int) -> list[list[Group]]:
    """First-fit decreasing: longest groups first, each into the first row with room; ties keep their order, so
    the rows are a function of the requests alone. Rows come out fullest first."""
    rows: list[list[Group]] = []
    room: list[int] = []
    for group in sorted(parts, key=lambda g: -g.length):
        r = next((r for r, free in enumerate(room) if free >= group.length), len(rows))
        if r == len(rows):
            rows.append([])
            room.append(capacity)
        rows[r].append(group)
        room[r] -= group.length
    order = sorted(range(len(rows)), key=lambda r: room[r])
    return [rows[r] for r in order]


def layout(
    rows: Sequence[Sequence[Group]], pairs: Sequence[tuple[Sequence[int], Sequence[int]]], T: int, K: int
) -> PackedRows:
    """The arrays of `rows`, each padded to T positions and K scored slots."""
    R = len(rows)
    tokens, positions, segments, branches = (np.zeros((R, T), np.int32) for _ in range(4))
    index, targets, request = np.zeros((R, K), np.int32), np.zeros((R, K), np.int32), np.full((R, K), -1, np.int32)
    for r, row in enumerate(rows):
        t = k = 0
        for s, group in enumerate(row, start=1):
            c = len(group.context)
            tokens[r, t : t + c], positions[r, t : t + c], segments[r, t : t + c] = group.context, np.arange(c), s
            last_context = t + c - 1
            t += c
            for b, i in enumerate(group.requests, start=1):
                cont = list(pairs[i][1])
                n = len(cont) - 1  # the last continuation token is predicted, never read
                tokens[r, t : t + n], positions[r, t : t + n] = cont[:-1], c + np.arange(n)
                segments[r, t : t + n], branches[r, t : t + n] = s, b
                # The first token is predicted at the context's last position, each later one at its predecessor.
                index[r, k : k + n + 1] = [last_context] + list(range(t, t + n))
                targets[r, k : k + n + 1], request[r, k : k + n + 1] = cont, i
                t, k = t + n, k + n + 1
    return PackedRows(tokens, positions, segments, branches, index, targets, request)


def row_length(row: Sequence[Group]) -> int:
    return sum(g.length for g in row)


def scored_slots(row: Sequence[Group], pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> int:
    return sum(len(pairs[i][1]) for g in row for i in g.requests)
