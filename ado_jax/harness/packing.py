"""Shared-prefix packing: log-likelihood requests that share a context are scored in one row.

A multiple-choice task asks for ``log p(continuation_i | context)`` of several continuations of
one context (HellaSwag 4, ARC 4-5, PIQA 2), so the padded one-request-per-row path
(``BucketedRunner.score``) runs the context through the model once per continuation. Here a
*group* is a shared prefix ``P`` (the context, as lm-eval's left truncation leaves it) and its
*branches* ``b_i`` (the continuations); its row segment holds ``P`` once and then each branch's
tokens but its last (``b_i[:-1]``: the last token is only a target). An attention mask
(``ado_jax.models.attention.SegmentMask``, from each token's group and branch) lets a branch
token read every token of ``P`` and, causally, the tokens of its own branch, but no other branch
and no other group of the row; each branch's rotary positions restart at ``len(P)``. So
every scored position sees exactly the tokens, at exactly the positions, it would see in its own
row ``P + b_i[:-1]``, and its log-probability is the same up to float rounding (1e-5 here in
float32). A branch's first token is predicted from ``P``'s last position, which all branches
share. A row is longer than ``max_length`` where that saves repeating a long context (the
positions never are). Groups are packed into rows (best fit, longest first) of the bucket length,
up to ``2 * max_length``, with the fewest estimated FLOPs (``BucketedRunner.pack``: longer rows
repeat fewer contexts and waste less padding but attend over more positions), and rows go through
the model in length buckets, so nothing compiles per request.

Shapes: R requests, G groups, B rows, T bucket length, S scored tokens of a batch (padded), V vocabulary.
"""

from __future__ import annotations

import bisect
import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ado_jax.models.attention import SegmentMask


@dataclasses.dataclass
class Group:
    """A shared prefix and its branches: ``members[i] = (request index, branch ids, n scored)``;
    request i's sequence is ``prefix + branch`` and its last ``n`` tokens (``n <= len(branch)``)
    are scored."""

    prefix: list[int]
    members: list[tuple[int, list[int], int]]

    @property
    def length(self) -> int:
        """Tokens the group takes in a row: the prefix and every branch but its last token."""
        return len(self.prefix) + sum(len(b) - 1 for _, b, _ in self.members)


def group_requests(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], max_length: int) -> list[Group]:
    """Groups ``(context_ids, continuation_ids)`` requests (R of them) by their context as the
    model sees it: ``(context + continuation)[-(max_length + 1):]`` minus the continuation (lm-eval's
    left truncation, so two continuations of a truncated context may see different contexts).

    Returns the groups in order of first appearance; every request is a member of exactly one.
    A group may take more than ``max_length`` tokens (``split_groups``); each of its requests,
    prefix and branch, is at most ``max_length + 1``."""
    by_prefix: dict[tuple[int, ...], list[tuple[int, list[int], int]]] = {}
    for r, (context, continuation) in enumerate(pairs):
        n = len(continuation)
        seq = (list(context) + list(continuation))[-(max_length + 1):]
        if not 1 <= n < len(seq):
            raise ValueError(f"request {r}: {n} continuation tokens of {len(seq)}; expected a non-empty "
                             f"context and continuation, the continuation at most max_length={max_length}")
        by_prefix.setdefault(tuple(seq[:-n]), []).append((r, seq[-n:], n))
    return [Group(list(prefix), members) for prefix, members in by_prefix.items()]


def split_groups(groups: Sequence[Group], capacity: int) -> list[Group]:
    """Splits every group longer than ``capacity`` tokens into parts that fit (members in order;
    each part repeats the prefix). A single request must fit."""
    out = []
    for g in groups:
        part: list[tuple[int, list[int], int]] = []
        used = len(g.prefix)
        for m in g.members:
            if len(g.prefix) + len(m[1]) - 1 > capacity:
                raise ValueError(f"request {m[0]}: {len(g.prefix) + len(m[1]) - 1} tokens exceed a row of {capacity}")
            if part and used + len(m[1]) - 1 > capacity:
                out.append(Group(g.prefix, part))
                part, used = [], len(g.prefix)
            part.append(m)
            used += len(m[1]) - 1
        out.append(Group(g.prefix, part))
    return out


def group_lengths(groups: Sequence[Group]) -> list[int]:
    """``[G]`` tokens each group takes in a row (``Group.length``)."""
    return [g.length for g in groups]


def pack_rows(lengths_G: Sequence[int], capacity: int) -> list[list[int]]:
    """Packs items of ``lengths_G`` tokens (each <= capacity) into rows of ``capacity``: longest
    first, each into the open row it fills best (best-fit decreasing), a new row when none has
    room. Returns the item indices of every row."""
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (room left, row index)
    for g in sorted(range(len(lengths_G)), key=lambda i: -lengths_G[i]):
        n = lengths_G[g]
        if n > capacity:
            raise ValueError(f"an item of {n} tokens does not fit a row of {capacity}")
        at = bisect.bisect_left(free, (n, -1))
        if at == len(free):
            rows.append([])
            room, row = capacity, len(rows) - 1
        else:
            room, row = free.pop(at)
        rows[row].append(g)
        if room - n > 0:
            bisect.insort(free, (room - n, row))
    return rows


def points_bucket(n: int, smallest: int = 64) -> int:
    """The padded number of scored tokens of a batch: ``smallest`` times 1 or 1.5 times a power of
    two (at most 1.5x ``n``), so a run compiles a few shapes."""
    size = smallest
    while True:
        if n <= size:
            return size
        if n <= size * 3 // 2:
            return size * 3 // 2
        size *= 2


def layout_rows(groups: Sequence[Group], rows: Sequence[Sequence[int]], B: int, T: int):
    """Host arrays of a batch: ``rows[b]`` lists the groups in row b (``len(rows) <= B``).

    Returns ``(tokens_BT, positions_BT, group_BT, segment_BT, row_S, pos_S, target_S, request_S)``
    (int32; S unpadded): ``group_BT`` numbers the groups of a row (-1: padding), ``segment_BT`` is 0
    on a prefix and i on a group's i-th branch; scored token s is ``target_S[s]`` predicted at
    ``[row_S[s], pos_S[s]]`` for request ``request_S[s]``."""
    tokens, positions = np.zeros((B, T), np.int32), np.zeros((B, T), np.int32)
    group, segment = np.full((B, T), -1, np.int32), np.zeros((B, T), np.int32)
    rows_S, pos_S, target_S, request_S = [], [], [], []
    for b, row in enumerate(rows):
        at = 0
        for gi, g in enumerate(row):
            P = len(groups[g].prefix)
            tokens[b, at:at + P], positions[b, at:at + P], group[b, at:at + P] = groups[g].prefix, np.arange(P), gi
            start = at + P
            for i, (r, branch, n) in enumerate(groups[g].members, start=1):
                k = len(branch) - 1
                tokens[b, start:start + k], positions[b, start:start + k] = branch[:-1], P + np.arange(k)
                group[b, start:start + k], segment[b, start:start + k] = gi, i
                q = np.arange(P + k - n, P + k)  # sequence indices (prefix + branch) predicting the last n
                pos_S.append(np.where(q < P, at + q, start + q - P))
                target_S.append(branch[-n:])
                rows_S.append(np.full(n, b))
                request_S.append(np.full(n, r))
                start += k
            at = start
        if at > T:
            raise ValueError(f"row {b}: {at} tokens exceed the bucket length {T}")
    cat = lambda xs: np.concatenate(xs).astype(np.int32) if xs else np.zeros(0, np.int32)
    return tokens, positions, group, segment, cat(rows_S), cat(pos_S), cat(target_S), cat(request_S)


def score_packed_batch(model, tokens_BT, positions_BT, group_BT, segment_BT, row_S, pos_S, target_S, out_sharding,
                       attention=None):
    """``(logprob_S, greedy_S)``: the float32 log-probability of each scored token (``layout_rows``)
    and whether it is the argmax; only the S scored positions go through the output projection.
    ``attention``: the model's attention kernel for this call (None: ``model.cfg.attention``)."""
    x_BTD = model.features(tokens_BT, positions_BT, SegmentMask(group_BT, segment_BT), attention)
    logits_SV = model.logits(x_BTD[row_S, pos_S][None])[0].astype(jnp.float32)
    target_lp_S = jnp.take_along_axis(logits_SV, target_S[:, None], axis=-1)[:, 0]
    logprob_S = target_lp_S - jax.nn.logsumexp(logits_SV, axis=-1)
    greedy_S = jnp.argmax(logits_SV, axis=-1) == target_S
    if out_sharding is not None:
        logprob_S, greedy_S = jax.lax.with_sharding_constraint((logprob_S, greedy_S), out_sharding)
    return logprob_S, greedy_S
