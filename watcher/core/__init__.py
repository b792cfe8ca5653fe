"""The pure core: the vocabulary, the kinds, and every decision. No I/O library, no
stdlib I/O module, no clock of its own, no logging."""
