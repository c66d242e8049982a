"""The identity of a teacher's weights: a SHA-256 over every parameter and buffer tensor (names, dtypes, shapes,
bytes), so a resumed precompute refuses to mix maps of two teachers that share a name but not their weights.

Computed once per model object (about a second per GB of weights, tensors copied to the CPU one at a time) and
cached until a tensor changes (in-place writes bump the tensors' version counters, which the cache checks).
"""

import hashlib
import weakref

import torch

_CACHE: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, str]]" = weakref.WeakKeyDictionary()


def weights_fingerprint(model: torch.nn.Module) -> str:
    """Hex SHA-256 of all of `model`'s named parameters and buffers, in `state_dict` order (cached per model)."""
    tensors = model.state_dict(keep_vars=True)
    versions = tuple((id(t), t._version) for t in tensors.values())
    if model not in _CACHE or _CACHE[model][0] != versions:
        digest = hashlib.sha256()
        for name, tensor in tensors.items():
            tensor = tensor.detach()
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
            digest.update(tensor.contiguous().view(-1).view(torch.uint8).cpu().numpy().tobytes())
        _CACHE[model] = (versions, digest.hexdigest())
    return _CACHE[model][1]


__all__ = ["weights_fingerprint"]
