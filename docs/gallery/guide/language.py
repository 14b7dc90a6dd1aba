"""
The language
============

A kernel source states what you believe about how a loss depends on its features: which
features act together, which act alone, which interact, and how smooth each part is.
``kd.compile`` turns it into one gpytorch kernel. This page lists every construct, every
kind of base kernel and every error; all outputs were produced by running the code when
this page was built.

.. code-block:: text

    # hands-on kernel for a training run (comments start with #)
    regime = matern52({log_epochs, log_batch_size}) * fj(lr) * fj(wd)
    arch   = matern52({log_mean_width}) * fj(widths)
    kernel = regime + arch + regime * arch      # learned weights decide

Constructs
----------

.. list-table::
   :header-rows: 1
   :widths: 30 70

   * - construct
     - meaning
   * - ``{a, b, "1cycle_max_lr"}``
     - a feature set; quote names that are not identifiers (digits first, ``.``, ``-``, ``=``)
   * - ``lr = {a, b, c}``
     - a named group, declared in the source (or passed from Python: ``groups={"lr": [...]}``);
       a group may list other groups, declared before or after it
   * - ``all``
     - the built-in group of every feature, e.g. ``matern52(all)`` (a definition or ``groups=``
       entry named ``all`` replaces it)
   * - ``matern52(g)``, ``rbf(g)``, ... (the kinds below)
     - a base kernel over the features of a set or group ``g``, with one lengthscale per feature
   * - ``g`` (a bare group, feature or set)
     - the default base kernel, ``matern52``, over it; a bare group name used several times is
       one shared kernel
   * - ``a + b + c``
     - a convex combination with learned weights (softmax-parameterised, Dirichlet prior);
       ``a + (b + c)`` flattens into one 3-way sum
   * - ``a * b``
     - elementwise product
   * - ``0.3 * a + 0.7 * b``
     - fixed weights (every term of that sum must have one; they add up to 1)
   * - ``additive(g)``
     - the learned-weight sum of one-feature ``matern52`` kernels over the features of ``g``
   * - ``fj(g)``
     - "factorized and joint": ``additive(g) + g``, one sum (for a one-feature group just ``g``)
   * - ``name = expr``
     - a definition; a name used several times is the same kernel with the same
       hyperparameters, computed once
   * - last line
     - the kernel: a bare expression, or a definition named ``kernel``

Newlines end statements, except inside brackets, after an operator, or before a line that
starts with ``+`` or ``*``. The whole kernel gets a learned output scale.

Priors (registered gpytorch priors, so the marginal likelihood includes them): Gamma(3, 6)
on every lengthscale, Gamma(2, 0.15) on the output scale, Dirichlet(2) on the weights of
each learned sum. They assume features scaled to about [0, 1], which the feature chains do.
``kd.compile(..., lengthscale_prior=...)`` and the other :class:`~kerneldsl.KernelOptions`
change them. A study (``kd.Study``, ``kd.tick_tock``) fits its kernels from a few trials, where
Gamma(3, 6) keeps every lengthscale near a third of a feature's range and the model local; there
each lengthscale gets botorch's default instead, LogNormal(sqrt(2) + log(d) / 2, sqrt(3)) with d the
features of its term (``kernel_options={"lengthscale_prior": ...}`` sets another).
"""

import warnings

import pandas as pd
import torch

import kerneldsl as kd
from kerneldsl.compiler.kinds import KINDS

torch.set_num_threads(1)

# %%
# Kinds of base kernel
# --------------------
#
# A base kernel over a set or group ``g`` is stationary with one lengthscale ``l_f`` per
# feature of ``g``: :math:`r = \sqrt{\sum_f (x_f - y_f)^2 / l_f^2}` is the scaled
# Euclidean distance, :math:`s = \sum_f |x_f - y_f| / l_f` the scaled L1 distance (so
# ``laplace({a, b})`` is ``matern12(a) * matern12(b)``, not ``matern12({a, b})``). This
# table is read from the compiler's registry of kinds (``kerneldsl.compiler.kinds``), so it
# lists exactly what this version understands.

pd.set_option("display.max_colwidth", None)
pd.DataFrame([{"function": f"{kind.name}(g)", "aliases": ", ".join(kind.aliases), "value": kind.math.formula,
               "distance": "r" if kind.distance.value == "squared" else "s", "for": kind.use}
              for kind in KINDS.values()])

# %%
# Trying constructs
# -----------------
#
# ``describe()`` prints a compiled kernel as source, with the current value of every
# weight and lengthscale (here the initial values: nothing is fitted yet). A small helper
# prints that, or the error:

FEATURES = ["log_lr", "log_wd", "log_epochs", "log_batch_size", "width", "depth", "opt_adam", "opt_sgd"]


def show(source, groups=None):
    try:
        kernel = kd.compile(source, features=FEATURES, groups=groups)
    except kd.KernelError as err:
        print(f"{type(err).__name__}: {err}\n")
    else:
        print(kernel.describe() + "\n")


show("matern52({log_lr, log_wd}) * categorical({opt_adam, opt_sgd})")

# %%
# A bare set or feature is ``matern52`` over it; ``+`` is a sum with learned weights, and
# nested sums flatten into one:

show("{log_lr, log_wd} + (rbf(width) + laplace({depth, width}))")

# %%
# Fixed weights: every term has one and they add up to 1.

show("0.7 * matern52({log_lr, log_wd}) + 0.3 * matern32({width, depth})")

# %%
# Groups, declared in the source or passed from Python, and ``additive`` / ``fj``: ``fj(g)``
# is one sum of a kernel per feature of ``g`` and a joint kernel over all of ``g``, so the
# fit can choose between "each feature acts alone" and "they act together".

show("""
lr = {log_lr, log_wd}
size = {width, depth}
additive(lr) * fj(size)
""")

# %%
# The same with the group passed from Python, and a group that lists other groups:

show("fj(training)", groups={"lr": ["log_lr", "log_wd"], "training": ["lr", "log_epochs", "log_batch_size"]})

# %%
# ``all`` is every feature: the one-size-fits-all kernel is ``matern52(all)``.

show("matern52(all)")

# %%
# Definitions: a name used twice is one kernel with one set of hyperparameters (and is
# computed once). A statement continues after an operator or before a leading ``+``:

show("""
regime = matern52({log_epochs, log_batch_size}) * fj({log_lr, log_wd})
arch = matern52({width, depth})
kernel = regime + arch
       + regime * arch
""")

# %%
# What the compiler made of it
# ----------------------------
#
# ``kerneldsl explain FILE`` prints the parsed program and the intermediate form: the
# base terms with their lengthscale slots, the sums and products level by level, and the
# parameter count (``--features`` names the columns; without it they are inferred from
# the source). Here the command installed beside this Python runs on a file:

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

Path("training.kernel").write_text("""\
lr = {log_lr, log_wd}
regime = matern52({log_epochs, log_batch_size}) * fj(lr)
kernel = regime + categorical({opt_adam, opt_sgd})
""")
kerneldsl_command = str(Path(sys.executable).parent / "kerneldsl")
print(subprocess.run([kerneldsl_command, "explain", "training.kernel", "--features", ",".join(FEATURES)],
                     capture_output=True, text=True).stdout)

# %%
# The structure picture
# ---------------------
#
# After a fit, the weights and lengthscales say what the data taught the kernel.
# :func:`~kerneldsl.plot_structure` draws the tree of the source (named definitions in
# bold; each edge out of a learned sum as thick as its weight) and a heat map of every base
# term's lengthscale per feature: darker is shorter, the function changes faster along that
# feature. Here a function whose truth we know: a sum of a smooth effect of ``a``, an
# interaction of ``b`` and ``c``, and nothing from ``d``.

torch.manual_seed(0)
X = torch.rand(60, 4, dtype=torch.float64)
y = torch.sin(6 * X[:, 0]) + 2 * (X[:, 1] - 0.5) * (X[:, 2] - 0.5) * 4 + 0.05 * torch.randn(60, dtype=torch.float64)
toy = kd.Space([kd.Scalar(name, 0.0, 1.0) for name in "abcd"])
toy_chain = kd.Chain(toy, [kd.PassThrough("a", "b", "c", "d")])
source = """
alone = additive({a, b, c, d})
pairs = matern52({b, c}) + matern52({a, d})
kernel = alone + pairs
"""
model = kd.KernelGP(source, toy_chain)(X, y.unsqueeze(-1))
kd.fit_map(model)
print(model.covar_module.describe())
fig = kd.plot_structure(model.covar_module, title="a fitted kernel: sin(6a) + (b - 1/2)(c - 1/2)")

# %%
# Within ``alone`` the fit put most of the weight on ``a`` (the sine), and within ``pairs``
# nearly all of it on the joint ``{b, c}`` term (the product); ``d``, which does nothing,
# got almost no weight anywhere.
# The same picture for the MNIST sweep's kernel is in
# :doc:`/recipes/hands_on_kernel`.
#
# Errors
# ------
#
# Mistakes are caught when the source is compiled, before any data is seen. Each message
# gives the place (line and column), the line with a caret under the culprit, and a
# suggestion where there is one. The three classes, all ``ValueError`` subclasses:
#
# * :class:`~kerneldsl.KernelSyntaxError`: the source does not parse;
# * :class:`~kerneldsl.KernelNameError`: an unknown group, feature, definition or function;
# * :class:`~kerneldsl.KernelError`: everything else (cycles, duplicate definitions, empty
#   sets, wrong arguments, weights ...), and the base class of the other two.
#
# Syntax errors:

show("matern52({log_lr, log_wd}) * ")
show("matern52({log_lr, log_wd}")
show("matern52({log_lr} {log_wd})")

# %%
# Unknown names, with the closest known name suggested (for the name of a choice, its
# one-hot features):

show("fj(lrr) * matern52({log_epochs})", groups={"lr": ["log_lr", "log_wd"]})
show("matern52({log_learning_rate})")
show("matern25({log_lr})")
show("categorical(opt)")
show("regime * arch")

# %%
# Everything else:

show("matern52({})")
show("matern52({log_lr, log_lr})")
show("matern52({log_lr}, {log_wd})")
show("matern52(rbf(log_lr))")
show("a = rbf(log_lr)\na = rbf(log_wd)\nkernel = a")
show("a = b * rbf(log_lr)\nb = a + rbf(log_wd)\nkernel = a")
show("lr = {wd, log_lr}\nwd = {lr, log_wd}\nkernel = lr")
show("0.5 * rbf(log_lr) + rbf(log_wd)")
show("0.5 * rbf(log_lr) + 0.6 * rbf(log_wd)")
show("matern52({log_lr}) * 0.5 * rbf(log_wd)")
show("rbf = {log_lr}\nkernel = rbf")

# %%
# Mistakes in the arguments from Python are ``KernelError`` s too:

show("fj(lr)", groups={"lr": ["log_lr", "learning_rate"]})
try:
    kd.compile("matern52({a, b})", features=["a", "b", "a"])
except kd.KernelError as err:
    print(f"{type(err).__name__}: {err}")

# %%
# A definition or group that is never used is probably a mistake, but not an error: it
# gives a :class:`~kerneldsl.KernelWarning` (a ``UserWarning``), with the same pointer.

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    kd.compile("lr = {log_lr, log_wd}\nunused = rbf(width)\nkernel = fj(lr)", features=FEATURES)
for warning in caught:
    print(f"{warning.category.__name__}: {warning.message}")
