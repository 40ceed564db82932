"""``JaxLM``: an LM Evaluation Harness model (``lm_eval.api.model.TemplateLM``) backed by our
jitted ``Llama``, with no torch and no export.

The harness (Gao et al., "The Language Model Evaluation Harness", EleutherAI, lm-eval 0.4) asks
three things of a model, all implemented here over ``batching.BucketedRunner``:

* ``loglikelihood``: ``(context, continuation) -> (log p(continuation | context), is_greedy)``:
  multiple-choice tasks (HellaSwag, PIQA, ...) and LAMBADA's last word, the tasks of the ADO
  paper's Table 1 ("Adaptive Data Optimization: Dynamic Sample Selection with Scaling Laws",
  arXiv:2410.11820);
* ``loglikelihood_rolling``: the log-likelihood of a whole text in windows of ``max_length``;
* ``generate_until``: greedy decoding until a stop string, the end-of-document token or
  ``max_gen_toks``.

Tokenization follows lm-eval's Hugging Face backend (``hf``) exactly, so the same model exported
with ``ado-jax export --format hf`` scores the same there: a context's trailing spaces move to the
continuation, the continuation's tokens are those of ``context + continuation`` past the
context's, an empty context is replaced by ``prefix_token_id``, sequences longer than
``max_length + 1`` lose tokens on the left. ``prefix_token_id`` is the tokenizer's BOS when it
has one, else its end-of-document id, else (the built-in 256-byte data, which has neither) the
byte of ``"\\n"``, the separator of the built-in data's files. A tokenizer with a BOS token
(``--bos-token``, which puts BOS before every training document) gets it before every encoded
text too. Requests that share a context (the choices of a multiple-choice question) are scored
with that context computed once (``BucketedRunner.score_packed``, ``ado_jax.harness.packing``):
the same log-likelihoods as one row per request. ``JaxLM`` needs lm-eval
(``pip install 'ado-jax[harness]'``); the module imports without it.
"""

from __future__ import annotations

from typing import Sequence

from ado_jax.harness.batching import BucketedRunner

try:  # the optional extra `harness`; without it the module imports and JaxLM(...) says what to install
    from lm_eval.api.model import TemplateLM
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
except ImportError:
    TemplateLM = None
MISSING = ("downstream evaluation needs the LM Evaluation Harness: pip install 'ado-jax[harness]' "
           "(or pip install lm-eval)")

NEWLINE_BYTE = 10  # prefix token of a tokenizer with neither BOS nor EOS (the built-in bytes)


class JaxLM(TemplateLM or object):
    """The lm-eval model of a ``Llama`` and one of our tokenizers.

    Args:
      model: a ``ado_jax.models.llama.Llama`` (placed on ``mesh`` when one is given).
      tokenizer: a ``ByteTokenizer``, ``BPETokenizer`` or ``HFTokenizer``
        (``ado_jax.data.tokenizer``): ``encode(text) -> uint32[n]``, ``decode(ids) -> str``.
      batch_size: rows per batch (the shortest buckets); ``max_batch_tokens`` caps longer ones.
      max_length: the longest sequence scored at once (default ``model.cfg.max_seq_len``, which
        is what the exported checkpoint's ``max_position_embeddings`` tells lm-eval's ``hf``).
      max_gen_toks: default cap on generated tokens (a request's ``max_gen_toks`` wins).
      mesh: a ``jax.sharding.Mesh`` to split batches over (None: the default device).
      pack: score requests that share a context once per context, several per row (the same
        numbers as ``pack=False``, one padded row per request, with fewer tokens through the model).
    """

    def __init__(self, model, tokenizer, batch_size: int = 32, max_length: int | None = None,
                 max_gen_toks: int = 256, max_batch_tokens: int = 65536, mesh=None, pack: bool = True):
        if TemplateLM is None:
            raise ImportError(MISSING)
        super().__init__()
        self.tokenizer_obj = tokenizer
        self._max_length = int(max_length or model.cfg.max_seq_len)
        self._max_gen_toks = int(max_gen_toks)
        if tokenizer.vocab_size > model.cfg.vocab_size:
            raise ValueError(f"the tokenizer has {tokenizer.vocab_size} ids but model.vocab_size is "
                             f"{model.cfg.vocab_size}: they must come from the same run")
        self.runner = BucketedRunner(model, self._max_length, batch_size, max_batch_tokens, mesh)
        self.pack = pack
        self.eos_id = getattr(tokenizer, "eos_id", None)
        self.bos_id = getattr(tokenizer, "bos_id", None)

    @property
    def eot_token_id(self) -> int:
        """The end-of-document id (the built-in bytes have none: the newline byte)."""
        return NEWLINE_BYTE if self.eos_id is None else self.eos_id

    @property
    def prefix_token_id(self) -> int:
        """What conditions an empty context and the first rolling window: BOS, else EOS."""
        return self.eot_token_id if self.bos_id is None else self.bos_id

    @property
    def max_length(self) -> int:
        """Tokens the model reads at once."""
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        """Default number of tokens ``generate_until`` may add."""
        return self._max_gen_toks

    @property
    def tokenizer_name(self) -> str:
        """Names the tokenizer for lm-eval's request cache."""
        return f"ado_jax-{self.tokenizer_obj.kind}-{self.tokenizer_obj.vocab_size}"

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        """Token ids ``[n]`` of ``string``; BOS first when the tokenizer has one and
        ``add_special_tokens`` is not False (lm-eval passes False for a continuation)."""
        ids = self.tokenizer_obj.encode(string).tolist()
        return ([self.bos_id] + ids) if self.bos_id is not None and add_special_tokens is not False else ids

    def tok_decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids: [n]``, cut before the first end-of-document id."""
        ids = list(ids)
        if self.eos_id is not None and self.eos_id in ids:
            ids = ids[:ids.index(self.eos_id)]
        return self.tokenizer_obj.decode(ids)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """``[(logprob, is_greedy)]`` of ``[((context, continuation), context_ids, continuation_ids)]``."""
        for (pair, context, continuation) in requests:
            if not context or not continuation:
                raise ValueError(f"request {pair!r}: empty context or continuation tokens")
            if len(continuation) > self.max_length:
                raise ValueError(f"request {pair!r}: continuation of {len(continuation)} tokens exceeds "
                                 f"max_length={self.max_length}")
        if self.pack:
            logprob_R, greedy_R = self.runner.score_packed([(list(c), list(k)) for _, c, k in requests],
                                                           progress=not disable_tqdm, desc="loglikelihood")
        else:
            inputs = [(list(c) + list(k))[-(self.max_length + 1):] for _, c, k in requests]
            logprob_R, greedy_R = self.runner.score(inputs, [len(k) for _, _, k in requests],
                                                    progress=not disable_tqdm, desc="loglikelihood")
        out = []
        for (pair, _, _), lp, greedy in zip(requests, logprob_R.tolist(), greedy_R.tolist()):
            out.append((lp, bool(greedy)))
            if pair is not None:
                self.cache_hook.add_partial("loglikelihood", pair, out[-1])
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Per request ``(text,)``: the log-likelihood of every token of ``text`` given the prefix
        token, in disjoint windows of ``max_length`` tokens (lm-eval's rolling windows)."""
        windows, owner = [], []
        for r, (text,) in enumerate(req.args for req in requests):
            for context, continuation in map(make_disjoint_window, get_rolling_token_windows(
                    self.tok_encode(text), self.prefix_token_id, self.max_length, context_len=1)):
                windows.append((None, context, continuation))
                owner.append(r)
        totals = [0.0] * len(requests)
        for r, (lp, _) in zip(owner, self._loglikelihood_tokens(windows, disable_tqdm)):
            totals[r] += lp
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy continuations of ``(context, gen_kwargs)`` requests, cut at the first stop string
        of ``gen_kwargs["until"]`` (or the end-of-document token); ``max_gen_toks`` caps their length.
        Sampling (``do_sample=True`` or ``temperature > 0``) is refused: decoding is greedy only."""
        out = [""] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for r, req in enumerate(requests):
            kwargs = dict(req.args[1] or {})
            if kwargs.get("do_sample") or float(kwargs.get("temperature") or 0.0) > 0:
                raise ValueError(f"generate_until: {kwargs} asks for sampling; JaxLM decodes greedily only "
                                 "(do_sample=false, temperature=0)")
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kwargs.get("max_gen_toks") or kwargs.get("max_new_tokens") or self.max_gen_toks)
            if not 0 < max_new < self.max_length:
                raise ValueError(f"generate_until: max_gen_toks={max_new} must be in [1, max_length="
                                 f"{self.max_length})")
            groups.setdefault((tuple(until), max_new), []).append(r)
        for (until, max_new), idx in groups.items():
            contexts = [self.tok_encode(requests[r].args[0])[-(self.max_length - max_new):] for r in idx]

            def finished(i, new, until=until):
                return (self.eos_id is not None and self.eos_id in new) or any(
                    s and s in self.tok_decode(new) for s in until)

            for r, new in zip(idx, self.runner.extend(contexts, max_new, finished, progress=not disable_tqdm)):
                text = self.tok_decode(new)
                for stop in until:
                    text = text.split(stop)[0] if stop else text
                out[r] = text
                self.cache_hook.add_partial("generate_until", requests[r].args, text)
        return out
