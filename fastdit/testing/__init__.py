"""Test and bench support: boot the real ComfyUI in-process or as a server, build tiny models."""
