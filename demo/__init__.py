"""The embedded demo world: procedural scenes, their latent space and text conditioning, and the
small models trained on them."""
