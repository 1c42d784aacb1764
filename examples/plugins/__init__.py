"""Plugins for examples/plugin_host.py, each an IPC-mode child module."""
