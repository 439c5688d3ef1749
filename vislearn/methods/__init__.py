"""The ideas themselves: distillation, DINO, k-means and product quantization, ... one file each."""
