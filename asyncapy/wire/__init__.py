"""Layer 1, wire: AsyncAProto framing, codecs, the PROXY header and the error codes; sans-IO, no asyncio.

Imports nothing else of asyncapy (tests/test_layers.py checks every layer)."""
