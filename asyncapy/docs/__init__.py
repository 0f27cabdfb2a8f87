"""Layer 7, docs: JSON Schema and AsyncAPI documents of the routes, and the docs page.

Takes the compiled routes and a description of the server; never imports ``asyncapy.server``."""
