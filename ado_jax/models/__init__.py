"""Models: the Llama transformer and the small models of the synthetic tasks."""
