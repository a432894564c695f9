"""Speed and fidelity bench: baseline and accelerated configurations run side by side in one
process (`python -m bench.fidelity`). Each technique adds its configurations in bench/configs/."""
