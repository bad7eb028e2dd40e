"""Small network pieces shared by denoisers and value heads."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


class TimeEmbedding(nn.Module):
    """Sinusoidal features of a noise level t in [0, 1]: (B,) -> (B, dim)."""

    def __init__(self, dim: int, max_period: float = 1000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"time embedding dimension must be even, got {dim}")
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = (t.float() * 1000.0).unsqueeze(-1) * self.freqs
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


def mlp(sizes: list[int], activation: type[nn.Module] = nn.SiLU) -> nn.Sequential:
    """Linear layers of the given widths with `activation` between them (none at the end)."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class TokenTransformer(nn.Module):
    """Pre-norm transformer denoiser for masked diffusion over `vocab_size` tokens.

    x_t (B, L, V+1) one-hot states (channel V is the mask), t (B,), mask (B, L) or None
    -> logits (B, L, V) of p_θ(x_0 | x_t). Learned positions; sinusoidal time features are
    added to every token.
    """

    def __init__(self, vocab_size: int, max_length: int, width: int = 128, layers: int = 3,
                 heads: int = 4, ff: int = 256, time_dim: int = 64):
        super().__init__()
        self.max_length = max_length
        self.embed = nn.Linear(vocab_size + 1, width)
        self.position = nn.Parameter(0.02 * torch.randn(max_length, width))
        self.time = TimeEmbedding(time_dim)
        self.time_proj = mlp([time_dim, width, width])
        layer = nn.TransformerEncoderLayer(width, heads, ff, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, vocab_size)

    def embed_tokens(self, x_t: torch.Tensor, time_features: torch.Tensor) -> torch.Tensor:
        """Token states (B, L, V+1) and time features (B, time_dim) -> the encoder's input
        (B, L, W): token embedding + position + projected time. DenoiserValueNet, which
        copies these modules under the same names, calls it too."""
        length = x_t.shape[1]
        if length > self.max_length:
            raise ValueError(f"sequences of {length} tokens are longer than the model's "
                             f"max_length {self.max_length}")
        return self.embed(x_t) + self.position[:length] + self.time_proj(time_features)[:, None]

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.embed_tokens(x_t, self.time(t))
        pad = None if mask is None else mask == 0
        h = self.encoder(h, src_key_padding_mask=pad)
        return self.out(self.norm(h))


class TokenConvValueNet(nn.Module):
    """Value network on (possibly relaxed) one-hot token states: (B, L, V+1), t (B,), mask -> (B,).

    Residual 1-D convolutions (local context) with the time features added to every layer,
    then a masked mean over positions and an MLP.
    """

    def __init__(self, vocab_size: int, hidden: int = 64, depth: int = 3, kernel: int = 3,
                 time_dim: int = 32):
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"value-head kernel must be odd, got {kernel}")
        self.embed = nn.Linear(vocab_size + 1, hidden)
        self.time = TimeEmbedding(time_dim)
        self.time_proj = nn.Linear(time_dim, hidden * depth)
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(depth))
        self.convs = nn.ModuleList(nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2) for _ in range(depth))
        self.head = mlp([hidden + time_dim, hidden, 1])

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        weights = torch.ones(x_t.shape[:2], dtype=x_t.dtype, device=x_t.device) if mask is None else mask.to(x_t.dtype)
        tf = self.time(t)
        shifts = self.time_proj(tf).chunk(len(self.convs), dim=-1)
        h = self.embed(x_t) * weights[..., None]
        for norm, conv, shift in zip(self.norms, self.convs, shifts):
            u = torch.nn.functional.gelu(norm(h) + shift[:, None]) * weights[..., None]  # padding reads as zeros
            h = h + conv(u.transpose(1, 2)).transpose(1, 2) * weights[..., None]
        pooled = (h * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1)
        return self.head(torch.cat([pooled, tf], -1)).squeeze(-1)


class TokenTransformerValueNet(nn.Module):
    """Value network with global context on (possibly relaxed) one-hot token states:
    (B, L, V+1), t (B,), mask (B, L) or None -> (B,). A small pre-norm transformer over the
    tokens (learned positions, time features added to every token), a masked mean over
    positions, then an MLP with the time features."""

    def __init__(self, vocab_size: int, max_length: int, hidden: int = 64, depth: int = 2, heads: int = 4,
                 time_dim: int = 32):
        super().__init__()
        self.embed = nn.Linear(vocab_size + 1, hidden)
        self.position = nn.Parameter(0.02 * torch.randn(max_length, hidden))
        self.time = TimeEmbedding(time_dim)
        self.time_proj = nn.Linear(time_dim, hidden)
        layer = nn.TransformerEncoderLayer(hidden, heads, 2 * hidden, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = mlp([hidden + time_dim, hidden, 1])

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        weights = torch.ones(x_t.shape[:2], dtype=x_t.dtype, device=x_t.device) if mask is None else mask.to(x_t.dtype)
        tf = self.time(t)
        h = self.embed(x_t) + self.position[: x_t.shape[1]] + self.time_proj(tf)[:, None]
        h = self.encoder(h, src_key_padding_mask=None if mask is None else mask == 0)
        pooled = (h * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1)
        return self.head(torch.cat([pooled, tf], -1)).squeeze(-1)


def hold_as_buffers(module: nn.Module) -> nn.Module:
    """Turn every parameter of `module` (recursively) into a buffer of the same name and
    value, in place: the weights stay in state_dict and move with .to(), but no optimiser
    sees them and requires_grad_ cannot turn them back on. Gradients still flow through
    the module to its inputs."""
    for sub in module.modules():
        for name, param in list(sub.named_parameters(recurse=False)):
            del sub._parameters[name]
            sub.register_buffer(name, param.detach().clone())
    return module


class DenoiserValueNet(nn.Module):
    """Value network that starts from a pretrained TokenTransformer denoiser's trunk.

    x_t (B, L, V+1) one-hot or relaxed token states (channel V the mask), t (B,), mask
    (B, L) or None -> (B,). A copy of the denoiser's token and position embeddings, its time
    features (added to every token, as in the denoiser) and its first `layers` encoder
    layers; the last `train_layers` of them are fitted, the rest (and the embeddings) are
    held fixed (see hold_as_buffers). Token features (B, L, W) are then pooled over the
    positions that are real tokens — weight 1 - x[..., pad_index] (a masked position counts
    as real; `pad_index` None: every position), times `mask` — by a weighted mean and by
    `pool_heads`-head attention pooling, and an MLP on [mean, attention, time features]
    regresses the value.
    """

    def __init__(self, denoiser: TokenTransformer, pad_index: int | None = None, layers: int | None = None,
                 train_layers: int = 1, hidden: int = 128, pool_heads: int = 4):
        super().__init__()
        depth = len(denoiser.encoder.layers)
        layers = depth if layers is None else int(layers)
        if not 1 <= layers <= depth:
            raise ValueError(f"layers must be in [1, {depth}] (the denoiser's depth), got {layers}")
        if not 0 <= train_layers <= layers:
            raise ValueError(f"train_layers must be in [0, {layers}], got {train_layers}")
        width = denoiser.position.shape[1]
        if width % pool_heads:
            raise ValueError(f"pool_heads {pool_heads} must divide the trunk width {width}")
        self.pad_index = pad_index
        self.pool_heads = pool_heads
        self.max_length = denoiser.max_length
        self.embed = copy.deepcopy(denoiser.embed)
        self.register_buffer("position", denoiser.position.detach().clone())
        self.time = copy.deepcopy(denoiser.time)
        self.time_proj = copy.deepcopy(denoiser.time_proj)
        self.frozen = nn.ModuleList(copy.deepcopy(denoiser.encoder.layers[i]) for i in range(layers - train_layers))
        self.trained = nn.ModuleList(copy.deepcopy(denoiser.encoder.layers[i])
                                     for i in range(layers - train_layers, layers))
        self.trained.requires_grad_(True)
        hold_as_buffers(self.embed)
        hold_as_buffers(self.time_proj)
        hold_as_buffers(self.frozen)
        self.norm = nn.LayerNorm(width)
        self.pool_score = nn.Linear(width, pool_heads)
        self.head = mlp([2 * width + 2 * self.time.freqs.shape[0], hidden, hidden, 1])

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        tf = self.time(t)
        h = TokenTransformer.embed_tokens(self, x_t, tf)  # the copied embedding modules, as the denoiser uses them
        pad = None if mask is None else mask == 0
        for layer in (*self.frozen, *self.trained):
            h = layer(h, src_key_padding_mask=pad)
        h = self.norm(h)  # (B, L, W)
        weights = torch.ones(x_t.shape[:2], dtype=h.dtype, device=h.device)
        if self.pad_index is not None:
            weights = 1 - x_t[..., self.pad_index]
        if mask is not None:
            weights = weights * mask.to(h.dtype)
        mean = (h * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1e-6)
        scores = self.pool_score(h) + weights.clamp(min=1e-6).log()[..., None]  # (B, L, heads)
        attention = torch.softmax(scores, dim=1)
        heads = h.reshape(*h.shape[:2], self.pool_heads, -1)  # (B, L, heads, W / heads)
        pooled = (attention[..., None] * heads).sum(1).reshape(h.shape[0], -1)  # (B, W)
        return self.head(torch.cat([mean, pooled, tf], -1)).squeeze(-1)


TOKEN_VALUE_KINDS = ("conv", "transformer", "denoiser")


def token_value_net(denoiser: TokenTransformer, options: dict, pad_index: int | None = None,
                    owner: str = "token") -> nn.Module:
    """The value network that `options["kind"]` names, for a model whose denoiser is a
    TokenTransformer over V tokens (states (B, L, V+1)): 'conv' (TokenConvValueNet, local
    context; the default), 'transformer' (TokenTransformerValueNet, global context) or
    'denoiser' (DenoiserValueNet: a copy of `denoiser`'s trunk, pooled over the positions
    that are not `pad_index`). The other options go to that network. `owner` names the
    plugin in the error for an unknown kind."""
    options = dict(options)
    kind = options.pop("kind", "conv")
    vocab = denoiser.embed.in_features - 1
    if kind == "conv":
        return TokenConvValueNet(vocab, **options)
    if kind == "transformer":
        return TokenTransformerValueNet(vocab, denoiser.max_length, **options)
    if kind == "denoiser":
        return DenoiserValueNet(denoiser, pad_index=pad_index, **options)
    raise ValueError(f"unknown {owner} value head kind '{kind}'; expected one of {', '.join(TOKEN_VALUE_KINDS)}")
