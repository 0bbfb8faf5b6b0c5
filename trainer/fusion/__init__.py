"""Fusion of specialist recurrent states into the primary's initial states (torch reference + Triton kernels)."""
