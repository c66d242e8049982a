"""The forward hooks through which an I-model records outputs, installed when the model is built rather than during a
forward, so that `torch.compile(fullgraph=True)` traces them (it cannot trace registering a hook, nor the lock under
which transformers installs its recording hooks on the first forward that records).

Imports only torch, transformers and the standard library, so that it travels with the remote code of checkpoints.
"""

from functools import partial

from torch import nn
from transformers.utils.output_capturing import capture_outputs, maybe_install_capturing_hooks

# Present in a model's `source_outputs` while its forward runs: the hooks keep outputs only then.
RECORDING = "__recording__"
# The code of the wrapper `capture_outputs` puts around a forward (`functools.wraps` hides its name).
_CAPTURING_WRAPPER = capture_outputs(lambda self: None).__code__


def captures_outputs(forward) -> bool:
    """Whether a `forward` is wrapped by transformers' `capture_outputs` (it records `_can_record_outputs` through hooks
    it installs on the first call that records)."""
    while forward is not None:
        if getattr(forward, "__code__", None) is _CAPTURING_WRAPPER:
            return True
        forward = getattr(forward, "__wrapped__", None)
    return False


def install_capturing_hooks(model: nn.Module) -> None:
    """Install transformers' recording hooks on `model` now. `post_init` runs at the end of each `__init__` of a chain,
    and modules may be replaced in between (the interaction attentions): the hooks this function installed before
    are removed first, so that each module carries its hooks once."""
    flag = "_output_capturing_hooks_installed"
    hooks, flagged = getattr(model, "_installed_capturing_hooks", ((), ()))
    for module, key in hooks:
        module._forward_hooks.pop(key, None)
    for module in flagged:
        module.__dict__.pop(flag, None)
    before = {id(module): (set(module._forward_hooks), flag in module.__dict__) for module in model.modules()}
    maybe_install_capturing_hooks(model)
    hooks = [(m, key) for m in model.modules() for key in m._forward_hooks if key not in before[id(m)][0]]
    flagged = [m for m in model.modules() if flag in m.__dict__ and not before[id(m)][1]]
    model._installed_capturing_hooks = (hooks, flagged)


def _keep_output(outputs: dict, name: str, _module, _args, output) -> None:
    if RECORDING in outputs:
        outputs[name] = output


def watch_submodules(model: nn.Module, names: tuple[str, ...]) -> dict:
    """Hooks that keep the outputs of the submodules `names` in the returned dict while `RECORDING` is in it (one
    forward); calling it again (a later `post_init`) replaces the previous hooks."""
    for handle in getattr(model, "_submodule_hooks", ()):
        handle.remove()
    outputs = {}
    model._submodule_hooks = [
        model.get_submodule(name).register_forward_hook(partial(_keep_output, outputs, name)) for name in names
    ]
    return outputs


__all__ = ["RECORDING", "captures_outputs", "install_capturing_hooks", "watch_submodules"]
