"""kerneldsl: a kernel language for hands-on Bayesian optimisation."""

from .api import build, compile
from .compiler.check import KernelWarning
from .compiler.errors import KernelError, KernelNameError, KernelSyntaxError
from .compiler.ir import KernelIR
from .compiler.lower import compile_ir
from .compiler.options import KernelOptions

__all__ = ["compile", "build", "compile_ir", "KernelIR", "KernelOptions",
           "KernelError", "KernelNameError", "KernelSyntaxError", "KernelWarning"]
