"""Token requests through the jitted model in padded, length-bucketed batches.

The LM Evaluation Harness asks a model for the log-likelihood of many short continuations and for
greedy generations. Compiling once per request length would dominate the run, so every request is
padded on the right to one of a few bucket lengths (two per octave: 64, 96, 128, 192, ... up to
the model's maximum; at most 1.5x the request's length), and every full batch of a bucket has the
same number of rows; a bucket's last, partial batch is padded to the next power of two of rows;
only the last quarter of the positions goes through the output projection when no request of the
batch scores more tokens. So a run compiles at most a few shapes per bucket, whatever its
requests, and the jitted functions are the module's: a later runner of a model of the same shapes
(every harness evaluation during training builds one) compiles nothing. The model is causal, so
right padding never changes a real position's logits.
``score_packed`` scores requests that share a context once per context, several contexts per
row (``ado_jax.harness.packing``); ``JaxLM`` uses it for every log-likelihood request. ``extend``
generates greedily with a key/value cache (``ado_jax.models.decode``): each context goes through
the model once, then each new token alone. With a
mesh, batches are placed with their rows split over the batch axes
(``ado_jax.sharding.batch_sharding``) and the model keeps its own (FSDP / tensor) sharding; every
process passes the same requests and reads the same replicated results.

Shapes: R requests, B rows of a batch, T bucket length, V vocabulary.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from ado_jax import sharding
from ado_jax.harness import packing
from ado_jax.models import decode
from ado_jax.models.attention import attention_by_blocks


def bucket_lengths(max_length: int, smallest: int = 64) -> tuple[int, ...]:
    """The padded lengths: ``smallest`` times powers of two and 1.5x powers of two, the last one
    ``max_length``.

    ``bucket_lengths(512) == (64, 96, 128, 192, 256, 384, 512)``; ``bucket_lengths(100) == (64, 96, 100)``.
    """
    if max_length < 1:
        raise ValueError(f"max_length={max_length}: must be a positive number of tokens")
    out, n = [], min(smallest, max_length)
    while n < max_length:
        out += [n] + ([n * 3 // 2] if n * 3 // 2 < max_length else [])
        n *= 2
    return tuple(out + [max_length])


def bucket_for(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket holding ``length`` tokens; ValueError when none does."""
    for b in buckets:
        if length <= b:
            return b
    raise ValueError(f"a request of {length} tokens is longer than the longest bucket {buckets[-1]}")


def _score_batch(model, inputs_BT, targets_BT, mask_BT, end_B, K: int, out_sharding, attention=None):
    """``(logprob_BK, greedy_B)``: the log-probability of each masked target among the last
    ``K`` positions before ``end_B`` (float32 log-softmax; 0 elsewhere; the caller sums in
    float64), and whether every masked target is the argmax. Only those ``K`` positions go
    through the output projection: the ``[B, K, V]`` logits, not ``[B, T, V]``, are materialized."""
    x_BTD = model.features(inputs_BT, attention=attention)
    pos_BK = end_B[:, None] - K + jnp.arange(K)[None, :]
    keep_BK = pos_BK >= 0
    pos_BK = jnp.maximum(pos_BK, 0)
    x_BKD = jnp.take_along_axis(x_BTD, pos_BK[..., None], axis=1)
    targets_BK = jnp.take_along_axis(targets_BT, pos_BK, axis=1)
    mask_BK = jnp.take_along_axis(mask_BT, pos_BK, axis=1) & keep_BK
    logits_BKV = model.logits(x_BKD).astype(jnp.float32)
    logz_BK = jax.nn.logsumexp(logits_BKV, axis=-1)
    target_BK = jnp.take_along_axis(logits_BKV, targets_BK[..., None], axis=-1)[..., 0]
    logprob_BK = jnp.where(mask_BK, target_BK - logz_BK, 0.0)
    greedy_B = jnp.all(~mask_BK | (jnp.argmax(logits_BKV, axis=-1) == targets_BK), axis=-1)
    if out_sharding is not None:
        logprob_BK, greedy_B = jax.lax.with_sharding_constraint((logprob_BK, greedy_B), out_sharding)
    return logprob_BK, greedy_B


def _prefill_batch(model, tokens_BT, lengths_B, attention=None):
    """``(cache, next_B)``: the key/value cache of the padded contexts and each row's first
    greedy token (``ado_jax.models.decode``)."""
    logits_BV, cache = decode.prefill(model, tokens_BT, lengths_B, attention)
    return cache, jnp.argmax(logits_BV, axis=-1).astype(tokens_BT.dtype)


def _extend_batch(model, cache, tokens_BT, lengths_B, next_B, n_steps: int, out_sharding):
    """Appends ``n_steps`` greedy tokens to each row at ``lengths_B``, one cached decoding step per
    token (a row that reaches T stops growing); returns ``(cache, tokens_BT, lengths_B, next_B)``,
    ``next_B`` the token each row appends next."""
    B, T = tokens_BT.shape
    rows_B = jnp.arange(B)

    def step(_, carry):
        cache, tokens_BT, lengths_B, next_B = carry
        room_B = lengths_B < T
        pos_B = jnp.minimum(lengths_B, T - 1)
        tokens_BT = tokens_BT.at[rows_B, pos_B].set(jnp.where(room_B, next_B, tokens_BT[rows_B, pos_B]))
        logits_BV, cache = decode.decode_step(model, cache, next_B, pos_B)
        next_B = jnp.where(room_B, jnp.argmax(logits_BV, axis=-1).astype(next_B.dtype), next_B)
        return cache, tokens_BT, jnp.minimum(lengths_B + 1, T), next_B

    cache, tokens_BT, lengths_B, next_B = jax.lax.fori_loop(0, n_steps, step, (cache, tokens_BT, lengths_B, next_B))
    if out_sharding is not None:
        tokens_BT, lengths_B = jax.lax.with_sharding_constraint((tokens_BT, lengths_B), out_sharding)
    return cache, tokens_BT, lengths_B, next_B


def _kernel(shards: int | None):
    """The attention kernel of a runner's calls: None (the model's own) or attention by blocks
    with ``shards`` runs of rows."""
    return None if shards is None else functools.partial(attention_by_blocks, shards=shards)


# Module-level jitted functions (the model an argument, the output sharding and the kernel's
# shards static), so that every runner of the same model shapes reuses their compilations: a
# harness evaluation during training builds a new runner each time and compiles nothing new.
_score_jit = eqx.filter_jit(lambda m, x, y, k, e, K, out, shards: _score_batch(m, x, y, k, e, K, out, _kernel(shards)))
_prefill_jit = eqx.filter_jit(lambda m, x, n, shards: _prefill_batch(m, x, n, _kernel(shards)))
# The cache, tokens and lengths of a chunk are replaced by the next's: donated.
_extend_jit = eqx.filter_jit(lambda m, c, x, n, nxt, steps, out: _extend_batch(m, c, x, n, nxt, steps, out),
                             donate="all-except-first")
_score_packed_jit = eqx.filter_jit(
    lambda m, arrays, out, shards: packing.score_packed_batch(m, *arrays, out, _kernel(shards)))


class BucketedRunner:
    """Scores and extends token requests with ``model`` (a ``Llama``) in bucketed batches.

    Args:
      model: the model, already placed on ``mesh`` when one is given.
      max_length: the longest sequence a batch may hold (the last bucket).
      batch_size: rows per batch (rounded up to a multiple of the mesh's batch axes).
      max_batch_tokens: a batch of bucket T holds at most this many tokens (at least as many
        rows as the batch axes), which bounds the ``[B, T, V]`` float32 logits.
      mesh: a ``jax.sharding.Mesh`` with ``sharding.AXES``, or None for the default device.
    """

    def __init__(self, model, max_length: int, batch_size: int = 32, max_batch_tokens: int = 65536,
                 mesh=None, gen_chunk: int = 16):
        if batch_size < 1 or max_batch_tokens < 1:
            raise ValueError(f"batch_size={batch_size}, max_batch_tokens={max_batch_tokens}: must be positive")
        self.model, self.mesh, self.gen_chunk = model, mesh, gen_chunk
        self.buckets = bucket_lengths(max_length)
        self.row_buckets = bucket_lengths(2 * max_length)  # packed rows (positions stay < max_length)
        self.split = 1 if mesh is None else math.prod(mesh.shape[a] for a in sharding.BATCH_AXES)
        self.batch_size = -(-batch_size // self.split) * self.split
        self.max_batch_tokens = max_batch_tokens
        self._out = None if mesh is None else NamedSharding(mesh, P())  # results: replicated
        # Scoring is inference: on CPU, attention by query blocks against only the key blocks they
        # read (not the upper triangle, not the other sequences of a packed row), each block's
        # scores in cache (ado_jax.models.attention.attention_by_blocks); one row per device per
        # loop step, so rows stay on their devices.
        self.blocks = model.cfg.attention == "auto" and jax.default_backend() == "cpu"
        self._shards = self.split if self.blocks else None

    def rows(self, T: int, needed: int | None = None) -> int:
        """Rows of a batch of bucket ``T``: a multiple of the batch axes within both limits (for
        a packed row longer than ``max_length``, ``B * T * T <= max_batch_tokens * max_length``:
        its attention logits fit the bound of a batch of ``max_length``); for a last batch of
        ``needed`` requests, the fewest rows of the form (batch axes) x 2^k."""
        fit = (self.max_batch_tokens * min(T, self.buckets[-1]) // T // T) // self.split * self.split
        full = max(self.split, min(self.batch_size, fit))
        if needed is None or needed >= full:
            return full
        return min(full, self.split * 2 ** math.ceil(math.log2(max(1, -(-needed // self.split)))))

    @staticmethod
    def scored_window(T: int, n_max: int) -> int:
        """Positions a batch of bucket ``T`` projects to logits: ``T // 4`` when every request scores
        at most that many tokens (multiple choice, LAMBADA) and it is at least 16, else ``T``."""
        return T // 4 if 16 <= T // 4 and n_max <= T // 4 else T

    def _put(self, host: np.ndarray):
        if self.mesh is None:
            return jnp.asarray(host)
        return jax.make_array_from_callback(host.shape, sharding.batch_sharding(self.mesh, host.ndim),
                                            lambda index: host[index])

    def _put_replicated(self, host: np.ndarray):
        if self.mesh is None:
            return jnp.asarray(host)
        return jax.make_array_from_callback(host.shape, NamedSharding(self.mesh, P()), lambda index: host[index])

    def _batches(self, lengths_R: Sequence[int], buckets: Sequence[int] | None = None):
        """``(T, rows, [request indices])`` per batch: requests grouped by bucket (of ``buckets``,
        default ``self.buckets``), longest first."""
        order = sorted(range(len(lengths_R)), key=lambda i: -lengths_R[i])
        by_bucket: dict[int, list[int]] = {}
        for i in order:
            by_bucket.setdefault(bucket_for(lengths_R[i], buckets or self.buckets), []).append(i)
        for T in sorted(by_bucket, reverse=True):
            idx, n = by_bucket[T], self.rows(T)
            for start in range(0, len(idx), n):
                yield T, self.rows(T, len(idx[start:start + n])), idx[start:start + n]

    def score(self, inputs: Sequence[Sequence[int]], n_scored: Sequence[int], progress: bool = False,
              desc: str = "scoring") -> tuple[np.ndarray, np.ndarray]:
        """Per request ``r``: ``inputs[r]`` (``[L_r]`` token ids, L_r <= max_length + 1) is fed
        as ``inputs[r][:-1]`` and its last ``n_scored[r]`` tokens are scored.

        Returns ``(logprob_R float64, greedy_R bool)``: the summed log-probability of those
        tokens, and whether each is the model's argmax (lm-eval's ``is_greedy``)."""
        R = len(inputs)
        logprob_R, greedy_R = np.zeros(R, np.float64), np.zeros(R, bool)
        lengths = [len(x) - 1 for x in inputs]
        for r, (L, n) in enumerate(zip(lengths, n_scored)):
            if not 1 <= n <= L:
                raise ValueError(f"request {r}: {n} scored tokens of {L + 1}; expected 1 <= scored < tokens")
        bar = tqdm(total=R, disable=not progress, desc=desc)
        for T, B, idx in self._batches(lengths):
            x_BT, y_BT, mask_BT = np.zeros((B, T), np.int32), np.zeros((B, T), np.int32), np.zeros((B, T), bool)
            end_B = np.zeros(B, np.int32)
            for row, r in enumerate(idx):
                seq, L = np.asarray(inputs[r], np.int32), lengths[r]
                x_BT[row, :L], y_BT[row, :L], end_B[row] = seq[:-1], seq[1:], L
                mask_BT[row, L - n_scored[r]:L] = True
            K = self.scored_window(T, max(n_scored[r] for r in idx))
            lp_BK, greedy_B = _score_jit(self.model, self._put(x_BT), self._put(y_BT), self._put(mask_BT),
                                         self._put(end_B), K, self._out, self._shards)
            logprob_R[idx] = np.asarray(lp_BK, np.float64)[:len(idx)].sum(axis=1)
            greedy_R[idx] = np.asarray(greedy_B)[:len(idx)]
            bar.update(len(idx))
        bar.close()
        return logprob_R, greedy_R

    def cost(self, lengths: Sequence[int], buckets: Sequence[int] | None = None) -> float:
        """Estimated forward FLOPs of the batches of sequences of ``lengths`` tokens: every padded
        position's weight matmuls, plus attention over its whole bucket (XLA computes [T, T]), or
        with the block kernel over half a window of at most ``max_length`` keys (a query reads its
        own sequence's earlier tokens)."""
        c = self.model.cfg
        HE, KE = c.d_model, c.n_kv_heads * (c.d_model // c.n_heads)
        matmul = 2 * c.n_layers * (2 * c.d_model * HE + 2 * c.d_model * KE + 3 * c.d_model * c.ff_dim)
        keys = (lambda T: min(T, self.buckets[-1]) / 2) if self.blocks else (lambda T: T)
        batches = self._batches(lengths, buckets)
        return float(sum(B * T * (matmul + 4 * c.n_layers * HE * keys(T)) for T, B, _ in batches))

    def pack(self, groups: Sequence[packing.Group]) -> tuple[list[packing.Group], list[list[int]], list[int]]:
        """Splits ``groups`` (``packing.split_groups``) and packs them into rows
        (``packing.pack_rows``) of the length, of ``row_buckets`` and at least the longest
        request's, with the fewest estimated FLOPs (``cost``): longer rows repeat fewer contexts
        and waste less padding but attend over more positions.
        Returns ``(groups, rows: [group indices], row lengths)``."""
        longest = max((len(g.prefix) + len(b) - 1 for g in groups for _, b, _ in g.members), default=1)
        best = None
        for capacity in self.row_buckets[self.row_buckets.index(bucket_for(longest, self.row_buckets)):]:
            split = packing.split_groups(groups, capacity)
            lengths_G = packing.group_lengths(split)
            rows = packing.pack_rows(lengths_G, capacity)
            row_lengths = [sum(lengths_G[g] for g in row) for row in rows]
            cost = self.cost(row_lengths, self.row_buckets)
            if best is None or cost < best[0]:
                best = (cost, split, rows, row_lengths)
        return best[1:]

    def score_packed(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], progress: bool = False,
                     desc: str = "scoring") -> tuple[np.ndarray, np.ndarray]:
        """Per request ``r``, ``pairs[r] = (context_ids, continuation_ids)``: the summed
        log-probability of the continuation given the context (``(context + continuation)`` cut to
        its last ``max_length + 1`` tokens) and whether each of its tokens is the argmax, as
        ``score([c + k for c, k in pairs], [len(k) for c, k in pairs])`` gives them, but computed
        once per distinct context, several contexts per row (``packing``).

        Returns ``(logprob_R float64, greedy_R bool)``."""
        R = len(pairs)
        logprob_R, greedy_R = np.zeros(R, np.float64), np.ones(R, bool)
        groups, rows, row_lengths = self.pack(packing.group_requests(pairs, self.buckets[-1]))
        bar = tqdm(total=R, disable=not progress, desc=desc)
        for T, B, idx in self._batches(row_lengths, self.row_buckets):
            tokens, positions, group, segment, row_S, pos_S, target_S, request_S = packing.layout_rows(
                groups, [rows[i] for i in idx], B, T)
            S, n = packing.points_bucket(len(row_S)), len(row_S)
            pad = lambda a: np.concatenate([a, np.zeros(S - n, np.int32)])
            arrays = (*map(self._put, (tokens, positions, group, segment)),
                      *map(self._put_replicated, (pad(row_S), pad(pos_S), pad(target_S))))
            lp_S, greedy_S = _score_packed_jit(self.model, arrays, self._out, self._shards)
            np.add.at(logprob_R, request_S, np.asarray(lp_S, np.float64)[:n])
            np.logical_and.at(greedy_R, request_S, np.asarray(greedy_S)[:n])
            bar.update(len(set(request_S.tolist())))
        bar.close()
        return logprob_R, greedy_R

    def extend(self, contexts: Sequence[Sequence[int]], max_new: int,
               finished: Callable[[int, list[int]], bool] = lambda r, new: False,
               progress: bool = False) -> list[list[int]]:
        """Greedy continuations: per context ``r`` (``[L_r]`` ids, L_r + max_new <= max_length),
        up to ``max_new`` new token ids, fewer when ``finished(r, new_ids)`` says the row is done
        (checked every ``gen_chunk`` tokens; the caller trims past its stop sequence)."""
        if max_new < 1:
            raise ValueError(f"max_new={max_new}: must be at least 1 token")
        out: list[list[int]] = [[] for _ in contexts]
        room = -(-max_new // self.gen_chunk) * self.gen_chunk
        lengths = [min(len(c) + room, self.buckets[-1]) for c in contexts]
        bar = tqdm(total=len(contexts), disable=not progress, desc="generating")
        for T, B, idx in self._batches(lengths):
            tokens_BT, length_B = np.zeros((B, T), np.int32), np.ones(B, np.int32)
            for row, r in enumerate(idx):
                tokens_BT[row, :len(contexts[r])], length_B[row] = contexts[r], len(contexts[r])
            start_B, done = length_B.copy(), np.zeros(len(idx), bool)
            tokens, length = self._put(tokens_BT), self._put(length_B)
            cache, nxt = _prefill_jit(self.model, tokens, length, self._shards)
            for _ in range(0, max_new, self.gen_chunk):
                cache, tokens, length, nxt = _extend_jit(self.model, cache, tokens, length, nxt, self.gen_chunk,
                                                         self._out)
                host, ends = np.asarray(tokens), np.asarray(length)
                for row, r in enumerate(idx):
                    if not done[row]:  # a finished row keeps what it had (the batch may go on)
                        out[r] = host[row, start_B[row]:ends[row]].tolist()[:max_new]
                        done[row] = len(out[r]) >= max_new or ends[row] >= T or finished(r, out[r])
                if done.all():
                    break
            bar.update(len(idx))
        bar.close()
        return out
