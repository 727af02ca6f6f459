"""Models: the frozen StyleGAN2 generator and CLIP, and the trainable CF-CLIP mapper (TEM + fusion + levels)."""
