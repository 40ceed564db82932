"""Fact memorization as a pure, jittable token stream (§2.3, App. B.3 of
"Lowering Data Diversity can Accelerate Training: Case Studies in Synthetic Tasks").

A synthetic language of subject, relation, answer and noise tokens; a fixed ground truth
``phi(s, r)`` (drawn once from the init key) picks an answer for every (subject, relation), from
the answers that belong to relation ``r``. A document is::

    d = [s, r, n_1, ..., n_k, phi(s, r)]       s ~ Categorical(weights_D), r, n_i uniform

and the batch follows ``data/base.py``: ``inputs = d[:-1]``, ``targets = d[1:]`` (int32[B, T]
with ``T = k + 2``), ``domain = s``. The domains are the subjects, so subject truncation to ``k``
(§4.1, uniform weights over the first ``k``), Zipf over subjects (§4.2), the App. A curriculum and
any mixer act through ``weights_D``.

Vocabulary: ``[subjects | relations | answers (answers_per_relation per relation) | noise]``.
The paper does not give the relation / answer / noise counts; ours are documented defaults.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from ado_jax.synthetic.sampling import sample_domains

Array = jax.Array


class FactsState(NamedTuple):
    """Stream state: ``key``, ground truth ``answer_SR: [S, R]`` int32 token ids, ``step``."""

    key: Array
    answer_SR: Array
    step: Array


class Facts(eqx.Module):
    """Pure stream of fact documents.

    Attributes:
      num_subjects: S (paper 100).  num_relations: R.  answers_per_relation: A.
      num_noise: size of the noise vocabulary.  k_noise: noise tokens per document.
      batch_size: B (paper 64).
    """

    num_subjects: int = 100
    num_relations: int = 4
    answers_per_relation: int = 16
    num_noise: int = 64
    k_noise: int = 4
    batch_size: int = 64

    def __check_init__(self):
        for name in ("num_subjects", "num_relations", "answers_per_relation", "num_noise", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.k_noise < 0:
            raise ValueError(f"k_noise must be >= 0, got {self.k_noise}")

    @property
    def num_domains(self) -> int:
        return self.num_subjects

    @property
    def seq_len(self) -> int:
        return self.k_noise + 2

    @property
    def vocab_size(self) -> int:
        return (self.num_subjects + self.num_relations * (1 + self.answers_per_relation)
                + self.num_noise)

    @property
    def answer_offset(self) -> int:
        return self.num_subjects + self.num_relations

    @property
    def noise_offset(self) -> int:
        return self.answer_offset + self.num_relations * self.answers_per_relation

    def init(self, key: Array) -> FactsState:
        """Draws the ground truth ``phi`` from ``key``."""
        kf, ks = jax.random.split(key)
        choice_SR = jax.random.randint(kf, (self.num_subjects, self.num_relations), 0,
                                       self.answers_per_relation)
        rel_R = jnp.arange(self.num_relations)
        answer_SR = self.answer_offset + rel_R[None, :] * self.answers_per_relation + choice_SR
        return FactsState(ks, answer_SR.astype(jnp.int32), jnp.zeros((), jnp.int32))

    def documents(self, key: Array, answer_SR: Array, s_B: Array, r_B: Array) -> Array:
        """``[B, k + 3]`` int32 documents for subjects ``s_B`` and relations ``r_B``."""
        noise_BK = self.noise_offset + jax.random.randint(
            key, (s_B.shape[0], self.k_noise), 0, self.num_noise)
        return jnp.concatenate([s_B[:, None], self.num_subjects + r_B[:, None], noise_BK,
                                answer_SR[s_B, r_B][:, None]], axis=1).astype(jnp.int32)

    def next(self, state: FactsState, weights_D: Array | None = None):
        """One batch; subjects ~ ``Categorical(weights_D)`` (uniform when None)."""
        key, ks, kr, kn = jax.random.split(state.key, 4)
        if weights_D is None:
            weights_D = jnp.ones((self.num_subjects,))
        s_B = sample_domains(ks, weights_D, (self.batch_size,))
        r_B = jax.random.randint(kr, (self.batch_size,), 0, self.num_relations, jnp.int32)
        doc_BT = self.documents(kn, state.answer_SR, s_B, r_B)
        batch = {"inputs": doc_BT[:, :-1], "targets": doc_BT[:, 1:], "domain": s_B}
        return batch, state._replace(key=key, step=state.step + 1)

    def all_pairs(self, key: Array, answer_SR: Array) -> tuple[Array, Array]:
        """Every (s, r) once, with fresh noise: prompts ``[S*R, k + 2]`` and answers ``[S*R]``."""
        s_P, r_P = jnp.divmod(jnp.arange(self.num_subjects * self.num_relations), self.num_relations)
        doc_PT = self.documents(key, answer_SR, s_P.astype(jnp.int32), r_P.astype(jnp.int32))
        return doc_PT[:, :-1], doc_PT[:, -1]


def paper_preset(**overrides) -> Facts:
    """The paper's §2.3 / App. B.3: 100 subjects, batch 64 (other counts are our defaults)."""
    return Facts(**{**dict(num_subjects=100, batch_size=64), **overrides})
