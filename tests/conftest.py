"""Shared test set-up: one intra-op thread (fastest for tiny models on 2 cores)."""
import torch

torch.set_num_threads(1)
