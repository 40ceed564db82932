"""Data: pure-functional domain streams, the built-in corpus, tokenizers, token files and sources."""
