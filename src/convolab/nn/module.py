"""Parameters and the Module base: state, modes, saving, and the backward contract.

A :class:`Module` holds :class:`Parameter` objects (an array ``.data`` and its
accumulated ``.grad``), buffers (arrays that are state but not learned, such as
BatchNorm's running mean) and child modules, registered in the order they are
assigned, so ``state_dict`` keys read like PyTorch's (``"0.weight"``,
``"features.3.running_var"``) and load into the same network built in PyTorch.

Calling a module runs ``forward(input)``, which remembers what its backward pass
needs; ``backward(grad_output)`` then returns the gradient with respect to that
input and *adds* the gradients of the module's parameters to their ``.grad``
(so gradients of several forward and backward passes accumulate until
``zero_grad()``). One forward allows one backward, as in PyTorch (whose
backward frees the graph): the backward uses up what the forward saved, and a
second backward without a fresh forward is a RuntimeError rather than the same
gradients added twice.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator

import numpy as np

from .._errors import fail
from .._vjp import vjp
from ..spec import check_flag

__all__ = ["Parameter", "Module", "VjpModule", "Sequential"]


class Parameter:
    """A learned array and the gradient accumulated for it.

    Attributes
    ----------
    data : numpy.ndarray
        The values; optimizers update it in place.
    grad : numpy.ndarray or None
        The sum of the gradients of every backward pass since the last
        ``zero_grad()``; None before the first (as in PyTorch).

    Examples
    --------
    >>> p = Parameter(np.zeros(2))
    >>> p.accumulate(np.ones(2)); p.accumulate(np.ones(2)); p.grad
    array([2., 2.])
    """

    __slots__ = ("data", "grad")

    def __init__(self, data: np.ndarray):
        if not isinstance(data, np.ndarray) or data.dtype.kind != "f":
            fail(TypeError, "Parameter", "data", repr(getattr(data, "dtype", type(data).__name__)),
                 "must be a floating-point numpy.ndarray")
        self.data = data
        self.grad: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    def accumulate(self, gradient: np.ndarray) -> None:
        """Add ``gradient`` (cast to the parameter's dtype) to ``.grad``."""
        gradient = np.asarray(gradient, dtype=self.data.dtype)
        if gradient.shape != self.data.shape:
            fail(ValueError, "Parameter.accumulate", "gradient", f"shape {gradient.shape}",
                 f"must have the parameter's shape {self.data.shape}")
        if self.grad is None:
            self.grad = gradient.copy()
        else:
            self.grad += gradient

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class of every layer and network.

    Subclasses call ``super().__init__()`` first, assign :class:`Parameter` s and
    child modules as attributes, and define ``forward`` and ``backward``.
    """

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    # -- registration -------------------------------------------------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise TypeError(f"{type(self).__name__}: call super().__init__() before assigning attribute {name!r}")
        for registry in (self._parameters, self._modules, self._buffers):
            registry.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def register_parameter(self, name: str, parameter: Parameter | None) -> None:
        """Register ``parameter`` under ``name``; ``None`` records an absent one (a layer without bias)."""
        object.__setattr__(self, name, parameter)
        if parameter is not None:
            self._parameters[name] = parameter

    def register_buffer(self, name: str, array: np.ndarray) -> None:
        """Keep ``array`` as state that is saved and loaded but not learned."""
        self.__setattr__(name, array)
        self._buffers[name] = array

    def _set_buffer(self, name: str, array: np.ndarray) -> None:
        object.__setattr__(self, name, array)
        self._buffers[name] = array

    # -- traversal ----------------------------------------------------------------------------------------------

    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        yield from self._modules.items()

    def children(self) -> Iterator["Module"]:
        yield from self._modules.values()

    def modules(self) -> Iterator["Module"]:
        """This module and every module below it, depth first."""
        yield self
        for child in self._modules.values():
            yield from child.modules()

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        for name, parameter in self._parameters.items():
            yield prefix + name, parameter
        for name, child in self._modules.items():
            yield from child.named_parameters(prefix + name + ".")

    def parameters(self) -> list[Parameter]:
        """Every parameter of this module and its children, in registration order."""
        return [parameter for _, parameter in self.named_parameters()]

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        for name, array in self._buffers.items():
            yield prefix + name, array
        for name, child in self._modules.items():
            yield from child.named_buffers(prefix + name + ".")

    # -- modes and gradients ------------------------------------------------------------------------------------

    def train(self, mode: bool = True) -> "Module":
        """Training mode (batch statistics, dropout on) or, with ``mode=False``, evaluation mode."""
        mode = check_flag(mode, "mode", f"{type(self).__name__}.train")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> "Module":
        """Evaluation mode: running statistics, no dropout."""
        return self.train(False)

    def zero_grad(self) -> None:
        """Forget accumulated gradients (``.grad = None``, as PyTorch's default)."""
        for parameter in self.parameters():
            parameter.grad = None

    # -- running ------------------------------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, input: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """Gradient with respect to the last forward's input; adds parameter gradients to ``.grad``.

        With ``input_grad=False`` the input gradient is not needed (the first
        layer of a network): None is returned, and layers that can skip computing
        it do, as PyTorch skips an input that does not require grad.

        Raises
        ------
        RuntimeError
            Before any forward, or a second time after one forward (run forward
            again: PyTorch raises there too, and the gradients would be added twice).
        """
        raise NotImplementedError(f"{type(self).__name__} does not define backward")

    # -- what a forward saves for its one backward --------------------------------------------------------------

    def _save_for_backward(self, **saved: Any) -> None:
        """Keep what the next backward needs (a forward calls this)."""
        object.__setattr__(self, "_for_backward", saved)
        object.__setattr__(self, "_backward_done", False)

    def _saved_for_backward(self, input_grad: Any = True) -> dict[str, Any]:
        """What the last forward saved, if no backward has used it yet; also checks the ``input_grad`` flag."""
        op = f"{type(self).__name__}.backward"
        check_flag(input_grad, "input_grad", op)
        saved = self.__dict__.get("_for_backward")
        if saved is None:
            if self.__dict__.get("_backward_done"):
                raise RuntimeError(
                    f"{op} called a second time after one forward: run forward again before another backward "
                    "(the first backward used what forward saved; a second would add the same gradients twice; "
                    "PyTorch raises here too)")
            raise RuntimeError(f"{op} called before forward")
        return saved

    def _release_saved(self) -> None:
        """A backward finished: drop what the forward saved, so another backward needs another forward."""
        object.__setattr__(self, "_for_backward", None)
        object.__setattr__(self, "_backward_done", True)

    # -- state --------------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer, keyed by dotted name (PyTorch's names)."""
        return dict(self._state_items(""))

    def _state_items(self, prefix: str) -> Iterator[tuple[str, np.ndarray]]:
        # PyTorch's order: a module's own parameters, then its buffers, then each child's.
        for name, parameter in self._parameters.items():
            yield prefix + name, parameter.data.copy()
        for name, array in self._buffers.items():
            yield prefix + name, np.array(array, copy=True)
        for name, child in self._modules.items():
            yield from child._state_items(prefix + name + ".")

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """Copy arrays from ``state`` into this module's parameters and buffers.

        Raises
        ------
        ValueError
            A missing or unexpected key (with ``strict``), or an array whose shape differs.
        """
        op = f"{type(self).__name__}.load_state_dict"
        strict = check_flag(strict, "strict", op)
        own_parameters = dict(self.named_parameters())
        own_buffers = dict(self.named_buffers())
        own = set(own_parameters) | set(own_buffers)
        missing, unexpected = sorted(own - set(state)), sorted(set(state) - own)
        if strict and (missing or unexpected):
            fail(ValueError, op, "state", f"missing keys {missing} and unexpected keys {unexpected}",
                 "must hold exactly this module's parameter and buffer names")
        for name in sorted(own & set(state)):
            value = np.asarray(state[name])
            current = own_parameters[name].data if name in own_parameters else own_buffers[name]
            if value.shape != current.shape:
                fail(ValueError, op, f"state[{name!r}]", f"shape {value.shape}",
                     f"must have the module's shape {current.shape}")
            if name in own_parameters:
                own_parameters[name].data = value.astype(current.dtype, copy=True)
            else:
                owner, _, leaf = name.rpartition(".")
                module = self._submodule(owner)
                module._set_buffer(leaf, value.astype(current.dtype, copy=True))

    def _submodule(self, dotted: str) -> "Module":
        module = self
        for part in filter(None, dotted.split(".")):
            module = module._modules[part]
        return module

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``state_dict()`` to a ``.npz`` file."""
        np.savez(path, **self.state_dict())

    def load(self, path: str | os.PathLike[str]) -> "Module":
        """Read a ``.npz`` file written by :meth:`save` into this module; returns the module."""
        with np.load(path) as archive:
            self.load_state_dict({name: archive[name] for name in archive.files})
        return self

    # -- display ------------------------------------------------------------------------------------------------

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"({name}): {child!r}".replace("\n", "\n  ") for name, child in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


class VjpModule(Module):
    """A module whose forward is one differentiable convolab op applied to its input and parameters.

    Subclasses set :attr:`op`, list their parameter attribute names in
    :attr:`param_names` (in the op's argument order after the input; a name whose
    attribute is None is passed as None) and return the op's keyword arguments
    from :meth:`op_kwargs`. The forward pass keeps the op's pullback
    (:func:`convolab.vjp`); backward runs it, adds the parameter gradients, and
    returns the input gradient.
    """

    op: Callable[..., Any]
    param_names: tuple[str, ...] = ()
    #: Whether the op's pullback takes ``input_grad=False`` and then skips the input's gradient (the
    #: convolutions'); a backward with ``input_grad=False`` asks it to.
    skips_input_grad = False

    def op_kwargs(self) -> dict[str, Any]:
        return {}

    def forward(self, input: np.ndarray) -> np.ndarray:
        arrays = [None if getattr(self, name) is None else getattr(self, name).data for name in self.param_names]
        output, pullback = vjp(type(self).op, input, *arrays, **self.op_kwargs())
        self._save_for_backward(input=input, pullback=pullback)
        return output

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        pullback = self._saved_for_backward(input_grad)["pullback"]
        if self.skips_input_grad and not input_grad:
            grad_input, *grad_params = pullback(grad_output, input_grad=False)
        else:
            grad_input, *grad_params = pullback(grad_output)
        for name, gradient in zip(self.param_names, grad_params):
            parameter = getattr(self, name)
            if parameter is not None and gradient is not None:
                parameter.accumulate(gradient)
        self._release_saved()
        return grad_input if input_grad else None


class Sequential(Module):
    """Modules applied in order; backward runs them in reverse.

    Examples
    --------
    >>> import numpy as np
    >>> from convolab import nn
    >>> net = Sequential(nn.Flatten(), nn.ReLU())
    >>> net(np.array([[[-1., 2.]]]))
    array([[0., 2.]])
    >>> net.backward(np.ones((1, 2)))
    array([[[0., 1.]]])
    """

    def __init__(self, *modules: Module):
        super().__init__()
        for index, module in enumerate(modules):
            if not isinstance(module, Module):
                fail(TypeError, "Sequential", f"modules[{index}]", type(module).__name__, "must be a Module")
            setattr(self, str(index), module)

    def __len__(self) -> int:
        return len(self._modules)

    def __getitem__(self, index: int) -> Module:
        return list(self._modules.values())[index]

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def forward(self, input: np.ndarray) -> np.ndarray:
        for module in self._modules.values():
            input = module(input)
        return input

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        input_grad = check_flag(input_grad, "input_grad", "Sequential.backward")
        modules = list(self._modules.values())
        for position in range(len(modules) - 1, -1, -1):
            # Only the first module's input is the caller's; every other input gradient feeds the next step.
            grad_output = modules[position].backward(grad_output, input_grad=input_grad or position > 0)
        return grad_output

