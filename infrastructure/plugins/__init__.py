"""Plugins: the interface every step plugin implements, the built-in catalog, and
third-party plugins from the `norn.plugins` entry-point group."""
