"""Downstream evaluation with the LM Evaluation Harness (``lm-eval``, the optional extra ``harness``).

``batching`` scores and greedily extends padded, length-bucketed token batches with the jitted
model (no lm-eval); ``packing`` lays requests that share a context out once per context, several
contexts per row; ``lm`` is the lm-eval model (``JaxLM``) built on it; ``run`` loads a run's
checkpoint and tokenizer, runs task suites and appends the results to ``metrics.jsonl``.
Importing this package imports neither lm-eval nor its submodules.
"""
