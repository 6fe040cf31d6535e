"""Non-finite values in training: the error, and an anomaly mode that finds their source.

``NonFiniteError`` (a ``FloatingPointError``) is what the :class:`~tinycnn.trainer.Trainer`
raises at the first NaN or inf loss or parameter. ``detect_anomaly(model)``, like
``torch.autograd.detect_anomaly``, checks every layer's output in ``forward`` and every
layer's input gradient in ``backward`` while it is active, and names the first layer where a
NaN or inf appears.
"""

from __future__ import annotations


class NonFiniteError(FloatingPointError):
    """A NaN or inf where training needs finite numbers (loss, parameter, layer output)."""
