"""Codecs: wire bytes and lists <-> numpy, images and texts -> model tensors, top-k strings."""
