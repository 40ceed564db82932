"""Mixture sweeps: K proxy runs over static mixtures, trained side by side in one jitted, vmapped step.

``samplers`` draws the mixtures (RegMix's Dirichlet, a simplex grid or Dirichlet cover, given
rows); ``proxies`` stacks K train states and steps them together, the K axis sharded over the
devices; ``run`` makes a resumable sweep directory of it; ``table`` writes the results table
that ``ado-jax fit-mixture`` reads; ``command`` is ``ado-jax sweep``.
"""
