"""A pure-JAX reproduction of the wrong gradient that DoGE's step got (no ado_jax code).

    python experiments/jax_repro/vmap_vjp_rows.py      # ~20 s on 2 CPU cores

``jax.vmap`` over the cotangent rows of one ``jax.vjp`` (per-domain rows plus a batch-mean row)
should give, in its batch-mean row, the gradient of the mean loss. For a one-layer model
(embedding, RMSNorm, single-head causal attention, tied unembedding) at a [16, 64] batch it does
not when the RMSNorm feeds an attention that also has RoPE or uses ``jax.nn.dot_product_attention``
(maximum error 0.14-0.27; each piece alone is right to 1e-8). Bisected on CPU (Python 3.11): wrong
with jaxlib 0.10.2; right (errors below 3e-8) with jaxlib 0.10.1 (under jax 0.10.1 and under jax
0.10.2) and jaxlib 0.9.2: a regression of jaxlib 0.10.2 (XLA), not of jax's Python side.
``REPORT.md`` beside this file is the upstream report, ready to file.
``ado_jax.train._domain_grads`` therefore maps the rows one at a time (``lax.map``). Prints the
maximum absolute error of the batch-mean row per combination of pieces.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np


def max_error(parts, B=16, T=64, d=16, V=32, D=4):
    """max |grad of the mean loss - the batch-mean row of vmap(vjp)| for a model with ``parts``."""
    rng = np.random.default_rng(0)
    shapes = {"E": (V, d), "Wq": (d, d), "Wk": (d, d), "Wv": (d, d), "W1": (d, 32), "W2": (32, d)}
    P = {k: jnp.asarray(rng.normal(size=s) * (0.1 if k == "E" else 0.3), jnp.float32) for k, s in shapes.items()}
    P["g"] = jnp.ones(d, jnp.float32)
    tokens = jnp.asarray(rng.integers(0, V, (B, T)))
    targets = jnp.asarray(rng.integers(0, V, (B, T)))
    domain = jnp.asarray(rng.integers(0, D, (B,)))

    def rope(x):
        ang = jnp.arange(T)[:, None] / (10000 ** (jnp.arange(d // 2) / (d // 2)))
        x1, x2 = x[..., : d // 2], x[..., d // 2:]
        return jnp.concatenate([x1 * jnp.cos(ang) - x2 * jnp.sin(ang), x1 * jnp.sin(ang) + x2 * jnp.cos(ang)], -1)

    def losses(P):  # [B] per-sequence mean cross-entropy
        h = P["E"][tokens]
        a = h * jax.lax.rsqrt(jnp.mean(h * h, -1, keepdims=True) + 1e-5) * P["g"] if "norm" in parts else h
        q, k, v = a @ P["Wq"], a @ P["Wk"], a @ P["Wv"]
        if "rope" in parts:
            q, k = rope(q), rope(k)
        if "dpa" in parts:
            o = jax.nn.dot_product_attention(q[:, :, None], k[:, :, None], v[:, :, None], is_causal=True)[:, :, 0]
        else:
            s = jnp.where(jnp.tril(jnp.ones((T, T), bool)), jnp.einsum("btd,bsd->bts", q, k) / 4.0, -1e9)
            o = jnp.einsum("bts,bsd->btd", jax.nn.softmax(s, -1), v)
        h = h + o
        if "mlp" in parts:
            h = h + jax.nn.silu(h @ P["W1"]) @ P["W2"]
        logp = jax.nn.log_softmax(h @ P["E"].T, -1)
        return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], -1)[..., 0], -1)

    want = jax.grad(lambda p: jnp.mean(losses(p)))(P)

    def rows(p):
        _, vjp = jax.vjp(losses, p)
        cot = jnp.concatenate([jax.nn.one_hot(domain, D, axis=0), jnp.full((1, B), 1.0 / B)])
        return jax.vmap(vjp)(cot)[0]

    got = jax.jit(rows)(P)
    return max(float(jnp.max(jnp.abs(want[k] - got[k][D]))) for k in P)


if __name__ == "__main__":
    print(f"jax {jax.__version__}, jaxlib {jax.lib.__version__}, {jax.default_backend()}")
    for r in (1, 2):
        for parts in itertools.combinations(("norm", "rope", "dpa", "mlp"), r):
            print(f"{'+'.join(parts):10s} max error of the batch-mean row: {max_error(parts):.3g}", flush=True)
