"""Kernel sets: ``reference`` (plain NumPy), ``numba_cpu`` (Numba), ``cuda`` (CuPy).

All expose the same functions; :func:`tinycnn.backend.kernels` picks one per call.
"""
