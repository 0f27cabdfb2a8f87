"""Layer 2, model: what handlers see (``Packet``, ``Client``, ``Session``) and how replies are encoded."""
