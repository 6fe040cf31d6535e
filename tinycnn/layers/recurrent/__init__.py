"""Recurrent layers: the cells (one time step) and the sequence layers (BPTT over the cells).

Read :mod:`tinycnn.layers.recurrent.cells` first (the gate equations and their
derivatives, one step), then :mod:`tinycnn.layers.recurrent.sequence` (the loops).
"""

from tinycnn.layers.recurrent.cells import GRUCell, LSTMCell, RNNCell
from tinycnn.layers.recurrent.sequence import GRU, LSTM, RNN

__all__ = ["GRU", "GRUCell", "LSTM", "LSTMCell", "RNN", "RNNCell"]
